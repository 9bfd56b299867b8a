#!/usr/bin/env bash
# The GPU check of issue 12, one prepared run: ISM of the reference CNN on a dask-cuda worker with
# torch on the GPU, against that GPU's forward limit, checked against full forwards
# (benchmarks/gpu_ism.py says what each stage measures). Run from the repository root on a
# machine with an NVIDIA GPU and torch; ~3-5 minutes on one H200.
#
# Python packages the GPU machine lacks travel as wheels in .whl/ (made here by
# `bash benchmarks/gpu_wheels.sh`); they are installed into /tmp/site first. Without .whl/ the
# machine's own packages are used (pip install 'interpretome[gpu]' beforehand).
# Output: the markdown section on stdout and in $OUT/gpu_section.md, the whole log in $OUT/gpu_check.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu_check.log"
timeout "${GPU_CHECK_TIMEOUT:-450}" python3 -m benchmarks.gpu_ism --out "$OUT" "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
