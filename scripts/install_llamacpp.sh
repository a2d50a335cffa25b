#!/usr/bin/env bash
# Build llama-cpp-python from PyPI for the benchmark's llama.cpp rows.
# llama.cpp's native build enables its AMX matmul on CPUs that report AMX; on the
# virtual machines this project runs on that path crashes (SIGSEGV in
# ggml_backend_amx_mul_mat), so the SIMD levels are named explicitly without AMX.
# With OpenBLAS present (Debian's libopenblas-dev; installed here when run as root)
# it also builds ggml's BLAS backend, which multiplies batches of 32 tokens or more
# in float32 on dequantized weights: the export-agreement benchmark uses it to
# separate the exported weights from the CPU path's 8-bit activations. Decoding one
# token at a time never reaches that backend.
set -euo pipefail
PY=${1:-.venv/bin/python}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
if "$PY" -c "import llama_cpp" 2>/dev/null; then exit 0; fi
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
if grep -q avx512bw /proc/cpuinfo 2>/dev/null; then
  flags="$flags -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
fi
if grep -q avx_vnni /proc/cpuinfo 2>/dev/null; then flags="$flags -DGGML_AVX_VNNI=ON"; fi
flags="$flags -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
if ! pkg-config --exists openblas 2>/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -q libopenblas-dev || { apt-get update -q && apt-get install -y -q libopenblas-dev; }; } \
    >/tmp/lmpress-apt-openblas.log 2>&1 || echo "install_llamacpp: no OpenBLAS (see /tmp/lmpress-apt-openblas.log)"
fi
if pkg-config --exists openblas 2>/dev/null; then
  flags="$flags -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"
else
  echo "install_llamacpp: building without BLAS; the agreement benchmark's float-path rows will be skipped"
fi
echo "building llama-cpp-python $VERSION with: $flags (several minutes on two cores)"
CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip install -q --no-cache-dir "llama-cpp-python==$VERSION"
