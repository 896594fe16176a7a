#!/usr/bin/env bash
# Builds the workspace with candle's `cuda` feature on a machine with no GPU and no CUDA install,
# then runs the CPU tests of that build, so the GPU code path cannot rot unnoticed.
#
# How (see ../shared/notes/cuda-build.md, where this was worked out):
# - nvcc comes from PyPI's CUDA 13 wheels (`cuda-toolkit[nvcc,cccl]`), pinned to 13.4 because
#   cudarc 0.19 refuses nvcc versions it does not know;
# - the driver, NVRTC, cuRAND and cuBLAS(Lt) are linked against stub libraries generated here from
#   the function names of cudarc's own bindings; every stub returns CUDA_ERROR_STUB_LIBRARY (34),
#   so the built binaries run and fail cleanly when asked for a GPU;
# - kernels are compiled for sm_90 (CUDA_COMPUTE_CAP), as no nvidia-smi can be asked.
# Everything lives outside the repository (SEGDIFF_CUDA_TOOLS, default ~/.cache/segdiff-cuda) and
# is reused by later runs; the build goes to target/cuda so the CPU build's cache stays intact.
#
# Usage: .ci/cuda-build.sh [build|test]   (default: test = build + run the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}

tools=${SEGDIFF_CUDA_TOOLS:-$HOME/.cache/segdiff-cuda}
venv=$tools/venv
toolkit="cuda-toolkit[nvcc,cccl]==13.4.3"
if [ ! -f "$venv/.installed-13.4.3" ]; then
    echo "installing nvcc from PyPI ($toolkit, ~130 MB) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$toolkit"
    touch "$venv/.installed-13.4.3"
fi
purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export CUDA_HOME=$purelib/nvidia/cu13
export CUDA_PATH=$CUDA_HOME
export PATH=$CUDA_HOME/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
nvcc --version | tail -n 2
ln -sf libcudart.so.13 "$CUDA_HOME/lib/libcudart.so"

# Link-time stubs, named as the real libraries (sonames included).
cargo fetch --quiet
registry=$(dirname "$(cargo metadata --format-version 1 --locked --features segdiff-cli/cuda \
    | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')")
[ -d "$registry/src/driver/sys" ] || { echo "cudarc's sources not found (at $registry)" >&2; exit 1; }
stubs=$CUDA_HOME/lib/stubs
mkdir -p "$stubs"
make_stub() { # module soname linkname
    local c=$stubs/$3.c
    grep -hoE '^\s+fn [A-Za-z_][A-Za-z_0-9]*\(' "$registry/src/$1/sys/mod.rs" \
        | sed -E 's/^\s+fn ([A-Za-z_0-9]+)\(/\1/' | sort -u \
        | awk '{ printf "int %s(void) { return 34; }\n", $1 }' > "$c"
    gcc -shared -fPIC -Wl,-soname,"$2" -o "$stubs/$2" "$c"
    ln -sf "$2" "$stubs/$3.so"
    rm -f "$c"
}
make_stub driver libcuda.so.1 libcuda
make_stub nvrtc libnvrtc.so.13 libnvrtc
make_stub curand libcurand.so.10 libcurand
make_stub cublas libcublas.so.13 libcublas
make_stub cublaslt libcublasLt.so.13 libcublasLt
export LD_LIBRARY_PATH=$CUDA_HOME/lib:$stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
features=(--features segdiff-cli/cuda)
cargo build --release --workspace "${features[@]}"

# The cuda build is real: it reaches the (stub) driver and reports the failure in plain words.
set +e
out=$("$CARGO_TARGET_DIR/release/segdiff" --device cuda model inspect assets/mni-demo/model 2>&1)
rc=$?
set -e
echo "segdiff --device cuda without a GPU: exit $rc: $out"
if [ "$rc" != 1 ] || ! grep -qi "cuda" <<<"$out"; then
    echo "expected a clean CUDA error (exit 1) from the cuda build" >&2
    exit 1
fi

if [ "$mode" = test ]; then
    cargo test --release --workspace "${features[@]}"
fi
