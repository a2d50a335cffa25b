#!/usr/bin/env bash
# Build llama-cpp-python from PyPI for the benchmark's llama.cpp rows.
# llama.cpp's native build enables its AMX matmul on CPUs that report AMX; on the
# virtual machines this project runs on that path crashes (SIGSEGV in
# ggml_backend_amx_mul_mat), so the SIMD levels are named explicitly without AMX.
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
echo "building llama-cpp-python $VERSION with: $flags (several minutes on two cores)"
CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip install -q --no-cache-dir "llama-cpp-python==$VERSION"
