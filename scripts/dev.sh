#!/usr/bin/env bash
# Set up (idempotent) and run one job:  scripts/dev.sh demo | test | unit | serve | setup | lint | arm64-test
#   demo  - the main job: the bundled trained demo model (a tiny MiniCPM-V 2.6) answers about a bundled picture
#   test  - the whole test suite (installs the PyTorch reference first, and chromium for the browser test)
#   serve - `minicpmv-edge serve ARGS` with the server extra installed
#   lint  - ruff on the Python, clang-format (.clang-format) on the C++; needs no build
#   unit  - the unit layer (tests/unit: pure logic, no torch, no converted checkpoint), torch made unimportable
#   arm64-test - the test suite on emulated aarch64 Linux (scripts/arm64-test.sh; a Debian arm64 root, cached)
# Everything goes into ./.venv. llama-cpp-python is built from source the first time (about 4 minutes on 2 cores);
# pip caches the wheel, so later set-ups take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-demo}
shift || true
if [ "$job" = "arm64-test" ]; then
  exec scripts/arm64-test.sh "$@"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
pip_q() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }

if [ "$job" = "lint" ]; then  # the linters' versions pinned: a newer one may read the same code otherwise
  pip_q "ruff==0.17.6" "clang-format==23.1.5"
  .venv/bin/ruff check python tests benchmarks tools
  git ls-files -z 'cpp/*.h' 'cpp/*.cpp' 'benchmarks/*.cpp' | xargs -0 .venv/bin/clang-format --dry-run --Werror
  echo "lint: clean" >&2
  exit 0
fi

# build tools for our extension (we build without isolation, against the installed llama-cpp-python)
pip_q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.21" ninja "scipy-openblas32>=0.3.28"

# llama-cpp-python, pinned: built from source once into our own wheelhouse, then installed from it.
# On x86-64 the build excludes ggml's AMX matmul path: its kernels crash or return garbage on some Sapphire
# Rapids machines (llama.cpp issues #20824 and #16315), this one included; AVX-512/VNNI/BF16 stay on.
LCP=0.3.36
wheelhouse="${XDG_CACHE_HOME:-$HOME/.cache}/minicpmv-edge/wheels/llama-cpp-python-$LCP"
if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP')" 2>/dev/null; then
  if ! ls "$wheelhouse"/llama_cpp_python-$LCP-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LCP from source (about 4 minutes, once)" >&2
    if [ "$(uname -m)" = "x86_64" ]; then
      noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
      export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
    fi
    "$VPY" -m pip wheel --quiet --no-deps --no-cache-dir -w "$wheelhouse" "llama-cpp-python==$LCP"
  fi
  pip_q --force-reinstall --no-deps "$wheelhouse"/llama_cpp_python-$LCP-*.whl
  pip_q "llama-cpp-python==$LCP"   # its dependencies
fi
extra=""
if [ "$job" = "test" ]; then
  pip_q "torch==2.14.1" "torchvision==0.29.1"   # the test reference only (torchvision: for timm)
  extra="[test]"
  # MiniCPM-V 1.0 and 2.0's originals pin transformers 4.36: their references run it in a child process, from a
  # folder of its own (transformers and tokenizers only; torch and the rest come from this environment)
  tf436=.venv/ref/transformers-4.36
  if [ ! -d "$tf436/transformers" ]; then
    "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tf436.tmp" \
      "transformers==4.36.0" "tokenizers==0.15.2" 2>&1 | grep -v '^WARNING: Location' || true
    rm -rf "$tf436" && mv "$tf436.tmp" "$tf436"
  fi
  # MiniCPM-V 4.5's LLM is Qwen3, which transformers has from 4.51 (the release its config.json records): its
  # reference runs there, from a folder of its own (transformers and its tokenizers; the rest shared)
  tf451=.venv/ref/transformers-4.51
  if [ ! -d "$tf451/transformers" ]; then
    "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tf451.tmp" \
      "transformers==4.51.0" "tokenizers==0.21.1" 2>&1 | grep -v '^WARNING: Location' || true
    rm -rf "$tf451" && mv "$tf451.tmp" "$tf451"
  fi
  # MiniCPM-V 4.6 is native in transformers 5.23, which needs newer tokenizers and huggingface_hub than the test
  # extra's 4.46: a folder of its own too (torch, numpy and the rest shared)
  tf523=.venv/ref/transformers-5.23
  if [ ! -d "$tf523/transformers" ]; then
    "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tf523.tmp" \
      "transformers==5.23.0" "tokenizers==0.23.3" "huggingface-hub==1.33.0" "safetensors==0.8.0" \
      "regex==2026.11.19" "typer==0.29.2" "httpx==0.29.0" 2>&1 | grep -v '^WARNING: Location' || true
    rm -rf "$tf523" && mv "$tf523.tmp" "$tf523"
  fi
  # llama.cpp's own converter (the "llama.cpp-made files" of the 4.6 tests): convert_hf_to_gguf.py, conversion/ and
  # gguf-py/ of the llama.cpp that llama-cpp-python $LCP vendors, from its sdist
  lcconv=.venv/ref/llama.cpp-$LCP
  if [ ! -f "$lcconv/convert_hf_to_gguf.py" ]; then
    sd=$(mktemp -d)
    "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$sd" \
      "llama-cpp-python==$LCP" 2>&1 | grep -v '^WARNING: Location' || true
    tar -xzf "$sd"/llama_cpp_python-$LCP.tar.gz -C "$sd" "llama_cpp_python-$LCP/vendor/llama.cpp/convert_hf_to_gguf.py" \
      "llama_cpp_python-$LCP/vendor/llama.cpp/conversion" "llama_cpp_python-$LCP/vendor/llama.cpp/gguf-py"
    rm -rf "$lcconv" && mv "$sd/llama_cpp_python-$LCP/vendor/llama.cpp" "$lcconv" && rm -rf "$sd"
  fi
  # the chat page's test drives a real browser: Debian's chromium, where apt can install it (else set CHROMIUM)
  if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
     && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing chromium (apt) for the browser test" >&2
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
elif [ "$job" = "serve" ]; then
  extra="[server]"
elif [ "$job" = "unit" ]; then
  extra="[server]"
  pip_q "pytest>=8"
fi
pip_q --no-build-isolation -e ".${extra}"
"$VPY" -c "import minicpmv_edge._native" || { echo "setup failed: the extension does not import" >&2; exit 1; }

case "$job" in
  setup) ;;
  demo) exec .venv/bin/minicpmv-edge demo "$@" ;;
  serve) exec .venv/bin/minicpmv-edge serve "$@" ;;
  test) exec "$VPY" -m pytest "$@" ;;
  unit)  # the unit layer, with torch, transformers and timm made unimportable: it must not need them
    shadow=$(mktemp -d)
    for m in torch transformers timm; do
      mkdir "$shadow/$m" && echo "raise ImportError('$m is not for the unit layer')" > "$shadow/$m/__init__.py"
    done
    PYTHONPATH="$shadow" "$VPY" -m pytest tests/unit "$@"; rc=$?; rm -rf "$shadow"; exit $rc ;;
  *) echo "usage: scripts/dev.sh demo|test|unit|serve|setup|lint|arm64-test [args]" >&2; exit 2 ;;
esac
