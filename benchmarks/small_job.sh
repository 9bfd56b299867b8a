#!/usr/bin/env bash
# Small-job wall time (issue 12, item 4): 2 sequences x 200 bp ISM with the reference CNN, end to end on the
# command line, `--executor auto` (in-process) and `local` (2 worker processes) side by side with the bare
# imports, 3 rounds. Run: `bash benchmarks/small_job.sh` (from the repository root; writes into a temp folder).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python - "$work/small.fa" <<'PY'
import sys
from interpretome.datasets import random_dna
with open(sys.argv[1], "w") as f:
    for i, row in enumerate(random_dna(2, 200, seed=0)):
        f.write(f">s{i}\n" + "".join("ACGT"[b] for b in row) + "\n")
PY
cd "$work"
uptime
for rep in 1 2 3; do
  for ex in auto local; do
    rm -rf s.zarr s.zarr.lock
    /usr/bin/time -f "$ex: wall %e s, cpu %U+%S s" python -m interpretome ism small.fa \
      --model interpretome.datasets:reference_cnn -o s.zarr --executor "$ex" > out.txt 2> err.txt
    tail -1 err.txt
    echo "  nanny kill lines: $(grep -c 'still alive' err.txt || true)"
  done
  /usr/bin/time -f "imports only: wall %e s, cpu %U+%S s" \
    python -c "import torch, dask, xarray, distributed, interpretome.cli" 2>&1 | tail -1
done
uptime
