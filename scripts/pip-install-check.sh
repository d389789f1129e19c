#!/usr/bin/env bash
# `pip install` as a user runs it: a copy of this checkout (its tracked files and the untracked ones git does not
# ignore, so uncommitted work is checked too) goes into a fresh virtual environment with ONE command,
#   <venv>/bin/pip install <copy>
# which builds llama-cpp-python (where no wheel fits) and our extension against that very build; then the installed
# `minicpmv-edge demo` must answer "Three." and `minicpmv-edge info` must list the CPU backend.
#   scripts/pip-install-check.sh [--wheel] [--fresh]
#   --wheel  also `python -m build` (an sdist, then a wheel built from that sdist), check the sdist's contents, and
#            install the wheel into a second fresh venv that first gets the same llama-cpp-python; the demo again
#   --fresh  as a brand-new user: no wheelhouse and an empty pip cache, so llama-cpp-python is built from source
#            (several minutes); checks that it is built exactly once
# Without --fresh, PIP_FIND_LINKS gets the wheelhouse scripts/dev.sh builds llama-cpp-python into
# (${XDG_CACHE_HOME:-~/.cache}/minicpmv-edge/wheels/llama-cpp-python-0.3.36) where it exists: a SHORTCUT so that CI
# does not rebuild llama-cpp-python (4+ minutes) on every run; pip then takes that wheel for both the build
# environment and the venv, exactly as it takes the one it built itself (and cached) on a user's machine.
# Everything (copy, venvs, pip's temporary build folders, the converted demo model) lives in one temporary folder,
# removed on exit whatever happens. Prints the elapsed seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
LCP=0.3.36
PY=${PYTHON:-python3}
wheel=0
fresh=0
for a in "$@"; do
  case "$a" in
    --wheel) wheel=1 ;;
    --fresh) fresh=1 ;;
    *) echo "usage: scripts/pip-install-check.sh [--wheel] [--fresh]" >&2; exit 2 ;;
  esac
done

# (a run killed outright leaves its folder behind: those older than 6 hours go now)
find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'mcv-pip-check.*' -type d -mmin +360 -exec rm -rf {} + 2>/dev/null || true
root=$(mktemp -d "${TMPDIR:-/tmp}/mcv-pip-check.XXXXXX")
cleanup() { chmod -R u+w "$root" 2>/dev/null || true; rm -rf "$root"; }
trap cleanup EXIT
trap 'exit 130' INT TERM   # (exit runs the EXIT trap)
mkdir -p "$root/src" "$root/tmp" "$root/models"
export TMPDIR=$root/tmp                # pip's and build's temporary build environments: removed with $root
export MINICPMV_EDGE_CACHE=$root/models  # the demo converts its model afresh, with the installed converter
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { echo "[pip-check $SECONDS s] $*" >&2; }
fail() { echo "pip-install-check: FAILED: $*" >&2; exit 1; }

wheelhouse="${XDG_CACHE_HOME:-$HOME/.cache}/minicpmv-edge/wheels/llama-cpp-python-$LCP"
lcp_wheel=""
if [ "$fresh" = 1 ]; then
  export PIP_CACHE_DIR=$root/pip-cache
  log "fresh: an empty pip cache, no wheelhouse (llama-cpp-python is built from source: several minutes)"
elif lcp_wheel=$(ls "$wheelhouse"/llama_cpp_python-$LCP-*.whl 2>/dev/null | head -1) && [ -n "$lcp_wheel" ]; then
  export PIP_FIND_LINKS="$wheelhouse ${PIP_FIND_LINKS:-}"
  log "llama-cpp-python from the wheelhouse $wheelhouse (not rebuilt)"
else
  log "no wheelhouse at $wheelhouse: pip builds llama-cpp-python from source, or takes its cached wheel"
fi

# the copy: what `git ls-files` calls tracked, plus untracked files not ignored (files deleted here are skipped)
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
done | tar --null -T - -cf - | tar -xf - -C "$root/src"
log "copied $(find "$root/src" -type f | wc -l) files to $root/src"

# Runs the installed demo in venv $1 from a neutral folder; checks its answer and info's backends line.
check_venv() {
  local venv=$1 out
  out=$(cd "$root" && "$venv/bin/minicpmv-edge" demo 2>"$root/demo.err") || { cat "$root/demo.err" >&2; fail "demo"; }
  [ "$out" = "Three." ] || { cat "$root/demo.err" >&2; fail "the demo answered '$out', not 'Three.'"; }
  log "demo answers: $out"
  out=$(cd "$root" && "$venv/bin/minicpmv-edge" info) || fail "info"
  echo "$out" | grep -E '^(ggml|backends:|device)' >&2 || true
  echo "$out" | grep -Eq '^backends: (.*, )?CPU(,|$)' || fail "info lists no CPU backend"
  # one ggml in the process: every mapping of libggml-base is the venv's llama_cpp/lib copy (Linux), found through
  # the extension's run path, which names only folders beside it (never the build environment's)
  if [ "$(uname -s)" = Linux ]; then
    if command -v readelf >/dev/null; then
      local rp so
      so=$(ls "$venv"/lib/python*/site-packages/minicpmv_edge/_core*.so)
      rp=$(readelf -d "$so" | sed -n 's/.*R[UN]*PATH.*\[\(.*\)\]/\1/p')
      echo "$rp" | grep -q 'llama_cpp/lib' && ! echo "$rp" | tr ':' '\n' | grep -vq '^\$ORIGIN/' \
        || fail "the extension's run path: '$rp'"
    fi
    (cd "$root" && "$venv/bin/python" - "$venv") <<'EOF' || fail "our extension did not run on the venv's ggml"
import os, sys
import minicpmv_edge._native  # noqa: F401
lib = os.path.realpath(os.path.join(sys.argv[1], "lib"))
maps = {line.split(None, 5)[5].strip() for line in open("/proc/self/maps") if "libggml-base" in line}
maps = {os.path.realpath(p) for p in maps}
assert len(maps) == 1 and next(iter(maps)).startswith(lib) and "/llama_cpp/lib/" in next(iter(maps)), maps
EOF
  fi
}

# Checks that venv $1 holds exactly the llama_cpp libraries of wheel $2 (the hashes of their RECORDs).
same_llama_build() {
  "$1/bin/python" - "$2" <<'EOF' || fail "the venv's llama-cpp-python is not the wheel $2"
import importlib.metadata as md, sys, zipfile
def libs(record):
    return {p: h for p, h, *_ in (line.split(",") for line in record.splitlines() if line)
            if p.startswith("llama_cpp/lib/")}
with zipfile.ZipFile(sys.argv[1]) as z:
    wheel = libs(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))).decode())
installed = libs(md.distribution("llama_cpp_python").read_text("RECORD"))
assert wheel and wheel == installed, (sorted(wheel.items())[:3], sorted(installed.items())[:3])
base = next(h for p, h in wheel.items() if "libggml-base" in p)
print(f"llama_cpp/lib: {len(wheel)} files, as in {sys.argv[1].rsplit('/', 1)[-1]} (libggml-base {base[:24]}..)")
EOF
}

# --- 1. the single install command, in a fresh venv
t0=$SECONDS
"$PY" -m venv "$root/venv"
log "pip install $root/src"
if ! "$root/venv/bin/pip" install -v "$root/src" >"$root/install.log" 2>&1; then
  tail -n 60 "$root/install.log" >&2
  fail "pip install (free disk: $(df -h "$root" | tail -1))"
fi
log "installed in $((SECONDS - t0)) s"
built=$(grep -c "Created wheel for llama-cpp-python" "$root/install.log" || true)
grep "Created wheel for llama-cpp-python" "$root/install.log" | sed 's/^ *//' >&2 || true
grep -m1 "ggml from llama-cpp-python:" "$root/install.log" | sed 's/^ *//' >&2 || true
[ "$built" -le 1 ] || fail "llama-cpp-python was built $built times"
if [ "$fresh" = 1 ]; then
  [ "$built" = 1 ] || fail "llama-cpp-python was built $built times (expected once)"
  lcp_wheel=$(find "$PIP_CACHE_DIR" -name "llama_cpp_python-$LCP-*.whl" | head -1)
  [ -n "$lcp_wheel" ] || fail "no llama-cpp-python wheel in pip's cache"
elif [ -n "$lcp_wheel" ]; then
  [ "$built" = 0 ] || fail "llama-cpp-python was rebuilt despite the wheelhouse"
fi
log "llama-cpp-python built $built time(s) by this install"
[ -z "$lcp_wheel" ] || same_llama_build "$root/venv" "$lcp_wheel"
check_venv "$root/venv"

# --- 2. (--wheel) an sdist and a wheel with `python -m build`; the wheel into a second fresh venv
if [ "$wheel" = 1 ]; then
  "$root/venv/bin/pip" install --quiet build >"$root/build.log" 2>&1 \
    || { cat "$root/build.log" >&2; fail "pip install build"; }
  log "python -m build (the sdist, then a wheel from it)"
  if ! (cd "$root/src" && "$root/venv/bin/python" -m build --outdir "$root/dist" . >>"$root/build.log" 2>&1); then
    tail -n 60 "$root/build.log" >&2
    fail "python -m build"
  fi
  sdist=$(ls "$root"/dist/minicpmv_edge-*.tar.gz)
  whl=$(ls "$root"/dist/minicpmv_edge-*.whl)
  log "built $(basename "$sdist") ($(du -h "$sdist" | cut -f1)), $(basename "$whl") ($(du -h "$whl" | cut -f1))"
  tar -tzf "$sdist" | sed 's|^[^/]*/||' >"$root/sdist.txt"
  for f in pyproject.toml CMakeLists.txt README.md cpp/CMakeLists.txt cpp/bindings.cpp \
           python/minicpmv_edge/cli/demo.py python/minicpmv_edge/data/demo.png \
           python/minicpmv_edge/data/demo/model.safetensors; do
    grep -qx "$f" "$root/sdist.txt" || fail "the sdist lacks $f"
  done
  if grep -E '^(build|\.venv|test-artifacts|dist)/|__pycache__|\.gguf$' "$root/sdist.txt" >&2; then
    fail "the sdist holds build products or environments (above)"
  fi
  log "sdist: $(grep -c '[^/]$' "$root/sdist.txt") files, in" \
    "$(grep -o '^[^/]*/' "$root/sdist.txt" | sort -u | tr -d '\n') and the top folder"
  "$PY" -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$whl" \
    >"$root/wheel.txt"
  grep -qx "minicpmv_edge/data/demo/model.safetensors" "$root/wheel.txt" || fail "the wheel lacks the demo model"
  grep -q "^minicpmv_edge/_core\..*\.so$" "$root/wheel.txt" || fail "the wheel lacks the extension"
  if grep -E '__pycache__|\.gguf$' "$root/wheel.txt" >&2; then fail "the wheel holds caches (above)"; fi
  "$PY" -m venv "$root/venv2"
  # the same llama-cpp-python first (the wheelhouse's, or the wheel pip built and cached above), then ours
  "$root/venv2/bin/pip" install --quiet "llama-cpp-python==$LCP" >"$root/install2.log" 2>&1 \
    || { tail -n 40 "$root/install2.log" >&2; fail "pip install llama-cpp-python into the second venv"; }
  [ -z "$lcp_wheel" ] || same_llama_build "$root/venv2" "$lcp_wheel"
  "$root/venv2/bin/pip" install --quiet "$whl" >>"$root/install2.log" 2>&1 \
    || { tail -n 40 "$root/install2.log" >&2; fail "pip install the wheel"; }
  check_venv "$root/venv2"
fi
log "pip install check passed in $SECONDS s (free disk: $(df -h "$root" | tail -1 | awk '{print $4}'))"
