#!/usr/bin/env bash
# Download into .whl/ the wheels benchmarks/gpu_check.sh installs on a GPU machine whose image has
# torch, cupy, numpy, pandas, numba, cuda-core and nvidia-ml-py but not dask (CPython 3.12, x86-64).
# .whl/ is git-ignored; it travels with the device run (carry .whl).
set -euo pipefail
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl \
  dask==2026.8.0 distributed==2026.8.0 dask-cuda==26.10.0 tornado==6.6.1 tblib==3.2.2 zict==3.0.0 \
  partd==1.4.2 locket==1.0.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  pyfaidx==0.9.2.2 xarray==2026.9.0
ls .whl
