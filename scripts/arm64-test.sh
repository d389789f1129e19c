#!/usr/bin/env bash
# The test suite's CPU-dependent tests on aarch64 Linux (as on a Raspberry Pi 5), emulated on an x86-64 machine:
#   scripts/dev.sh arm64-test [pytest args]
# Everything is cached under ${XDG_CACHE_HOME:-~/.cache}/minicpmv-edge/arm64:
#   root/   a Debian bookworm arm64 root (debootstrap, second stage run under proot + qemu-user), with Python 3.11
#           and a venv at /opt/venv holding the test extra's aarch64 wheels from PyPI
#   lcp/    the pinned llama-cpp-python, cross-compiled (Debian's crossbuild-essential-arm64) into an aarch64
#           wheel: cross-compiling llama.cpp takes ~5 minutes, compiling it under emulation many times that
#   build/  our extension, cross-compiled against that wheel's ggml and the root's Python headers (incremental)
# The aarch64 builds are portable (baseline armv8-a; ggml picks its dot-product kernels at run time), so the
# wheels would run on any 64-bit ARM board; see the README's "ARM boards" section.
# Tests too slow under emulation are left out by default (section 5), each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LCP=0.3.36
A="${XDG_CACHE_HOME:-$HOME/.cache}/minicpmv-edge/arm64"
ROOT=$A/root
SITE=$ROOT/opt/venv/lib/python3.11/site-packages
mkdir -p "$A"
log() { echo "[arm64 $(date +%H:%M:%S)] $*" >&2; }
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

# --- host tools: the bootstrapper, the emulator, a rootless chroot and the cross toolchain (Debian packages)
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v proot >/dev/null || need+=(proot)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(crossbuild-essential-arm64)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# the host venv: cmake, ninja, pybind11 and scikit-build-core for the cross builds
scripts/dev.sh setup >&2
HPY=$REPO/.venv/bin/python

# The emulated CPU: a Raspberry Pi 5's Cortex-A76 (armv8.2-a with dot product and fp16 arithmetic) unless
# ARM64_CPU names another of `qemu-aarch64-static -cpu help` (cortex-a72: a Pi 4, armv8.0 without dot product).
# qemu's default "max" CPU (512-bit SVE, int8 matmul) is not a board's, and ggml's SVE kernels give wrong values and
# NaNs in the vision encoder's graph under it (with the same wheels, cortex-a76 matches the x86 results).
# ARM64_CPU="max,sve=off,sme=off" is an armv8.6+ core without SVE (dot product and the int8 matrix multiply, as
# Apple M2 / Graviton 3 have): the one to run our I8MM kernel's tests on (tests/test_int8.py), where ggml's I8MM
# kernels are the reference.
CPU=${ARM64_CPU:-cortex-a76}

# Run a command inside the arm64 root, emulated. The repository is visible at its own path; HOME is the root's.
# (QEMU_CPU goes in the guest's environment: proot starts a new qemu with it for every program the guest runs.)
in_root() {
  proot -q qemu-aarch64-static -r "$ROOT" -b /dev -b /proc -b /sys -b "$REPO" -w "${WD:-/}" \
    /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 QEMU_CPU="$CPU" \
    PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

# --- 1. the Debian arm64 root (once)
if [ ! -f "$ROOT/.bootstrapped" ]; then
  rm -rf "$ROOT"
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrap stage 1 from $mirror"
  $sudo debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-dev,ca-certificates bookworm "$ROOT" "$mirror" >/dev/null
  cp "$(command -v qemu-aarch64-static)" "$ROOT/usr/bin/"
  log "debootstrap stage 2 under emulation (about 5 minutes)"
  proot -q qemu-aarch64-static -0 -r "$ROOT" -w / /bin/sh -c \
    "DEBOOTSTRAP_DIR=/debootstrap /debootstrap/debootstrap --second-stage" >/dev/null
  touch "$ROOT/.bootstrapped"
fi
# the host's CA bundle (pip in the root goes out through the same network as the host)
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca.crt"

# --- 2. the venv with the test extra (aarch64 wheels from PyPI), keyed by the requirement list
# torch: 2.10.0 is the last CPU-only aarch64 torch on PyPI (later ones pull ~3 GB of CUDA libraries); the test
# reference is plain float32 PyTorch, the same on either version. The browser test's playwright is not needed.
reqs=$("$HPY" - <<'EOF'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
arm = {"torch": "torch==2.10.0", "torchvision": "torchvision==0.25.0", "playwright": None, "ruff": None, "llama-cpp-python": None}
deps = []
for d in p["dependencies"] + p["optional-dependencies"]["test"]:
    name = d.split("=")[0].split(">")[0].split("<")[0].strip()
    d = arm.get(name, d)
    if d:
        deps.append(d)
print("\n".join(deps + ["typing-extensions>=4.5.0", "diskcache>=5.6.1"]))  # llama-cpp-python's own
EOF
)
deps_key=$(echo "$reqs" | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/opt/venv/.deps" 2>/dev/null)" != "$deps_key" ]; then
  log "installing the test extra's aarch64 wheels"
  [ -x "$ROOT/opt/venv/bin/python" ] || in_root /usr/bin/python3 -m venv /opt/venv
  echo "$reqs" > "$ROOT/opt/venv/requirements-test.txt"
  in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --only-binary=:all: -r /opt/venv/requirements-test.txt
  echo "$deps_key" > "$ROOT/opt/venv/.deps"
fi
# transformers 4.36 for the 1.0/2.0 references' child processes (tests/reference/isolated.py), as scripts/dev.sh test
if [ ! -d "$ROOT/opt/venv/ref/transformers-4.36/transformers" ]; then
  log "installing transformers 4.36 for the 1.0/2.0 references"
  in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --no-deps --only-binary=:all: \
    --target /opt/venv/ref/transformers-4.36 "transformers==4.36.0" "tokenizers==0.15.2"
fi
# transformers 4.51 for the 4.5 references (its LLM is Qwen3), as scripts/dev.sh test
if [ ! -d "$ROOT/opt/venv/ref/transformers-4.51/transformers" ]; then
  log "installing transformers 4.51 for the 4.5 references"
  in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --no-deps --only-binary=:all: \
    --target /opt/venv/ref/transformers-4.51 "transformers==4.51.0" "tokenizers==0.21.1"
fi
# transformers 5.23 for the 4.6 references (MiniCPM-V 4.6 is native there), and llama.cpp's own converter (the
# "llama.cpp-made files" of the 4.6 tests: pure Python, from llama-cpp-python's sdist), as scripts/dev.sh test
if [ ! -d "$ROOT/opt/venv/ref/transformers-5.23/transformers" ]; then
  log "installing transformers 5.23 for the 4.6 references"
  in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --no-deps --only-binary=:all: \
    --target /opt/venv/ref/transformers-5.23 "transformers==5.23.0" "tokenizers==0.23.3" "huggingface-hub==1.33.0" \
    "safetensors==0.8.0" "regex==2026.11.19" "typer==0.29.2" "httpx==0.29.0" "httpcore==1.0.9" "h11==0.16.0" \
    "anyio==4.16.0" "idna==3.20" "certifi==2026.10.19.post1" "click==8.5.1" "shellingham==1.5.4" "pyyaml==6.0.4"
fi
if [ ! -f "$ROOT/opt/venv/ref/llama.cpp-$LCP/convert_hf_to_gguf.py" ]; then
  log "unpacking llama.cpp's converter"
  sd=$(mktemp -d)
  "$HPY" -m pip download --quiet --no-deps --no-binary=:all: -d "$sd" "llama-cpp-python==$LCP" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  tar -xzf "$sd"/llama_cpp_python-$LCP.tar.gz -C "$sd" "llama_cpp_python-$LCP/vendor/llama.cpp/convert_hf_to_gguf.py" \
    "llama_cpp_python-$LCP/vendor/llama.cpp/conversion" "llama_cpp_python-$LCP/vendor/llama.cpp/gguf-py"
  mkdir -p "$ROOT/opt/venv/ref" && rm -rf "$ROOT/opt/venv/ref/llama.cpp-$LCP"
  mv "$sd/llama_cpp_python-$LCP/vendor/llama.cpp" "$ROOT/opt/venv/ref/llama.cpp-$LCP" && rm -rf "$sd"
fi

# A CMake toolchain file for Debian's cross compiler, with the arm64 root as the sysroot (its glibc and Python).
# Portable baseline: armv8-a; ggml builds its ARM kernels as run-time selected variants (GGML_CPU_ALL_VARIANTS).
TC=$A/aarch64-toolchain.cmake
cat > "$TC" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_SYSROOT $ROOT)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
EOF

# --- 3. llama-cpp-python for aarch64, cross-compiled into a wheel (once per version)
lwheel=$(ls "$A"/lcp/llama_cpp_python-$LCP-*aarch64.whl 2>/dev/null | head -1 || true)
if [ -z "$lwheel" ]; then
  log "cross-compiling llama-cpp-python $LCP for aarch64 (a few minutes, once)"
  mkdir -p "$A/lcp"
  rm -rf "$A/lcp/src" && mkdir -p "$A/lcp/src"
  "$HPY" -m pip download --quiet --no-deps --no-binary=:all: -d "$A/lcp/src" "llama-cpp-python==$LCP" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  tar -xzf "$A"/lcp/src/llama_cpp_python-$LCP.tar.gz -C "$A/lcp/src"
  src="$A/lcp/src/llama_cpp_python-$LCP"
  # Debian 12's cross GCC (12) does not know -march=armv9.2-a, which ggml's two SME variants need (GCC >= 14):
  # those two are left out of the list; armv8.0 ... armv8.6+SVE2 (dot product, fp16, SVE, int8 matmul) stay.
  sed -i '/ggml_add_cpu_backend_variant(armv9\.2_[12] /d' "$src/vendor/llama.cpp/ggml/src/CMakeLists.txt"
  # the CPU backend as loadable variants (armv8.0 baseline, +dotprod, +fp16, +sve, +i8mm, +sve2), installed
  # beside libggml-base, where our extension loads them from (ggml picks the best the CPU supports)
  CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$TC -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
-DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF" \
  _PYTHON_HOST_PLATFORM=linux-aarch64 \
    "$HPY" -m pip wheel --quiet --no-deps --no-cache-dir -w "$A/lcp" "$src" >&2
  lwheel=$(ls "$A"/lcp/llama_cpp_python-$LCP-*aarch64.whl | head -1)
fi
if ! in_root /opt/venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LCP')" \
    2>/dev/null; then
  cp "$lwheel" "$ROOT/tmp/"
  in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --no-deps --force-reinstall "/tmp/$(basename "$lwheel")"
fi

# --- 4. our extension, cross-compiled into a wheel of this checkout and installed in the root's venv
log "cross-compiling minicpmv-edge for aarch64"
rm -f "$A"/dist/minicpmv_edge-*.whl
# (the prefix path: the target's site-packages, not the host's that the build backend names; pybind11: the host's)
CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$TC -DMINICPMV_NATIVE=OFF -DMINICPMV_TARGET_SITE=$SITE -DCMAKE_PREFIX_PATH=$SITE \
-Dpybind11_DIR=$("$HPY" -m pybind11 --cmakedir) \
-DPython_INCLUDE_DIR=$ROOT/usr/include/python3.11 -DPYTHON_MODULE_EXTENSION=.cpython-311-aarch64-linux-gnu.so" \
_PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so \
SKBUILD_BUILD_DIR="$A/build" \
  "$HPY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$A/dist" . >&2
mwheel=$(ls "$A"/dist/minicpmv_edge-*.whl | head -1)
cp "$mwheel" "$ROOT/tmp/"
in_root /opt/venv/bin/python -m pip install -q --no-cache-dir --no-deps --force-reinstall "/tmp/$(basename "$mwheel")"

# --- 5. the tests, emulated. qemu runs our native code and PyTorch 10-100x slower than the host (the host's whole
# suite, ~5 minutes, would take hours), so by default this runs the tests marked `arm64` (`-m arm64`): those whose
# outcome depends on the CPU, the compiler or the aarch64 wheels (the slicer's bit-exact pixels, position ids, the
# encoder's parity with PyTorch on both matmul paths, libmtmd, q8_0 on ggml's int8 kernels, greedy chat parity, one
# ggml in the process, text decoding, the test checkpoints). A mark with parameters picks the cases of a
# parametrized test (tests/conftest.py). Arguments replace the selection.
# Left out (all pass on x86-64 in `scripts/dev.sh test`):
#   the other parametrizations of the marked tests (more families and scenarios): the same code paths, minutes each
#   tests/test_runtime.py, tests/test_video_cache.py, tests/test_fuzz.py: soaks, stress threads and fuzzing loops
#     (thousands of chats / frames / files; hours under emulation)
#   tests/test_limits.py, tests/test_hostile.py: memory bounds measured as peak RSS, which under qemu counts the
#     emulator's own memory
#   tests/test_demo_model.py: trains the demo model for a minute natively; scores 40 questions
#   tests/test_padded_batch.py: the padded batch against the original, 1344x1344 pictures (tens of minutes here)
#   tests/test_convert.py, tests/test_chat_cli.py, tests/unit: plain Python over the paths above
#   tests/test_server.py, tests/test_server_page.py: the HTTP server and the browser page (no aarch64 chromium)
selection=(-m arm64 --ignore=tests/test_server_page.py tests)  # (its module imports playwright, not installed here)
[ $# -gt 0 ] && selection=("$@")
log "running under emulation ($CPU): ${selection[*]}"
WD=$REPO in_root /opt/venv/bin/python -m pytest -p no:cacheprovider --durations=10 "${selection[@]}"
