#!/usr/bin/env bash
# What only a GPU can check, in one prepared call, before any table (the device tool's `run`):
# the `gpu` test lane and the GPU benchmark rows (README "Benchmarks"). Results go to $OUT:
# gpu-lane.txt (pytest's summary), bench-gpu.md (the rows), bench-gpu.log.
#
#   bash device/gpu-checks.sh                 # both, at the benchmarks' full size
#   SIZE=quick bash device/gpu-checks.sh      # a minute: does it run at all
#   ONLY=lane bash device/gpu-checks.sh       # the lane alone (ONLY=bench: the rows alone)
#   DEVICE=cpu SIZE=quick bash device/gpu-checks.sh   # the plumbing, on a machine without a GPU
#
# The machine has python3 with torch, lightning, torchmetrics and pytest; hydra-core, omegaconf
# and antlr4 travel as wheels in .whl (device/fetch-wheels.sh; carry .whl).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-checks-out}
SIZE=${SIZE:-full}
ONLY=${ONLY:-all}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# deterministic cuBLAS for the exact-resume check
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
if ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/anomaly-site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/anomaly-site"
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
status=0
if [ "$ONLY" != bench ]; then
  "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_step_syncs.py 2>&1 | tee "$OUT/gpu-lane.txt" | tail -3
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ "$ONLY" != lane ]; then
  # 3: framework step vs a plain loop (ae, GPND, ARAE); 1: GPND scoring vs the published loop;
  # 7: k trainings sharing the GPU vs one
  "$PYTHON" -m benchmarks --device "$DEVICE" --size "$SIZE" --only 3,1,7 --out "$OUT/bench-gpu.md" \
    > "$OUT/bench-gpu.log" 2>&1 || status=1
  tail -30 "$OUT/bench-gpu.md" 2>/dev/null
fi
exit $status
