#!/usr/bin/env bash
# Sets up a CUDA 13.0 build toolchain for candle's `cuda` feature on a machine that has neither
# a GPU nor a system CUDA installation, from pinned PyPI wheels, and prints the environment to
# build with. Nothing is installed system-wide: the wheels go into a virtual environment under
# $CUDA_TOOLCHAIN_DIR (default $HOME/.cache/cuda13-toolchain), created on the first call and
# reused afterwards.
#
#   eval "$(scripts/cuda-toolchain.sh)"                       # once per shell
#   cargo build --release --features cuda -p model-runtime --example gpu_latency
#
# Needs: python3 with the venv module and pip access to PyPI (first call only), and a C
# compiler (`cc`) for the libcuda link stub. See docs/GPU.md.
#
# The versions are pinned to CUDA 13.0 on purpose: the PTX that candle's kernels are compiled to
# must be accepted by the driver of the GPU machine (a 580-series driver, CUDA 13.0 here); a
# newer NVVM emits PTX that an older driver rejects. Change the pins together with the target
# driver.
set -euo pipefail

root=${CUDA_TOOLCHAIN_DIR:-$HOME/.cache/cuda13-toolchain}
python=${PYTHON:-python3}
wheels=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cublas==13.0.2.14"
  "nvidia-curand==10.4.5.25"
)

say() { echo "cuda-toolchain: $*" >&2; }

if [ ! -x "$root/venv/bin/python" ]; then
  say "creating $root/venv and installing the pinned CUDA 13.0 wheels"
  mkdir -p "$root"
  "$python" -m venv "$root/venv" >&2
  "$root/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[@]}" >&2
fi

# The wheels install under site-packages/nvidia/cu13/{bin,include,lib,nvvm}.
cu=$("$root/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
lib="$cu/lib"
if [ ! -x "$cu/bin/nvcc" ]; then
  say "no nvcc under $cu/bin: remove $root and run again"
  exit 1
fi

# The wheels ship only versioned shared objects (libcudart.so.13, ...); the linker looks for the
# unversioned names.
for pair in cudart:13 nvrtc:13 cublas:13 cublasLt:13 curand:10; do
  name=${pair%%:*}
  version=${pair##*:}
  ln -sf "$lib/lib$name.so.$version" "$lib/lib$name.so"
done

# libcuda belongs to the GPU driver, which this machine does not have. Link against a stub that
# defines every driver-API entry point named in cuda.h (plus the profiler calls, whose header the
# wheels do not ship), with the driver's soname; at run time the real libcuda.so.1 of the GPU
# machine's driver is loaded instead. Never put this directory on LD_LIBRARY_PATH when running.
if [ ! -f "$lib/libcuda.so" ]; then
  say "building the libcuda link stub"
  {
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h"
    printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
  } | sort -u | awk '{ print "void " $1 "(void) {}" }' > "$root/cuda-stub.c"
  ${CC:-cc} -shared -fPIC -o "$lib/libcuda.so" -Wl,-soname,libcuda.so.1 "$root/cuda-stub.c"
fi

# What the build needs: nvcc and the headers (CUDA_ROOT / CUDA_PATH, PATH), the target compute
# capability (no GPU is visible to detect it; 90 = Hopper: H100, H200), and the link path.
cat <<ENV
export CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export PATH="$cu/bin:\$PATH"
export LIBRARY_PATH="$lib:\${LIBRARY_PATH:-}"
ENV
