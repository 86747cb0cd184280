#!/usr/bin/env bash
# Paper tables on a bare GPU machine, in one prepared call (the device tool's `run`, or any
# machine with python3, torch, lightning and torchmetrics).
#
#   bash device/campaign.sh TABLE[:GRID OVERRIDES] …
#   bash device/campaign.sh gpnd_mnist:protocol.fold=0 "arae_mnist_p2:variant=dae protocol.normal=[2]"
#   BUDGET=smoke DEVICE=cpu bash device/campaign.sh "gpnd_coil100:protocol.n_normal=1 protocol.draw=0"
#
# Settings (environment): BUDGET (paper), DEVICE (gpu | cpu), JOBS_PER_GPU (4), JOBS (CPU jobs:
# the cores), DATA_DIR (data), OUT (where results go back: $OUT on the device machine, else
# campaign-out), RUNS (the run dirs, campaign-runs), PYTHON (python3), LIMIT (seconds for all tables, 540: a
# 10-minute call with time to pack), ARGS (more overrides for every table).
#
# Each table runs as `python -m anomaly.reproduce table=… budget=$BUDGET trainer=$DEVICE …`, its
# trainings fanned out over the GPU (jobs_per_gpu), kept cells skipped, interrupted trainings
# resumed. What comes back, per table: results-TABLE.tgz (reproduced/TABLE/BUDGET: unpack it in the
# repository root and commit) and cells-TABLE.json (every cell, smoke runs included); a table named
# again (another variant) gets TABLE-2, TABLE-3 … Each
# results.json records the machine (GPU, CUDA) and the versions it ran with.
#
# The machine lacks hydra-core, omegaconf and antlr4: they travel as wheels in .whl (made here
# by device/fetch-wheels.sh; name .whl in the device tool's `carry`).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-paper}
DEVICE=${DEVICE:-gpu}
JOBS_PER_GPU=${JOBS_PER_GPU:-4}
JOBS=${JOBS:-$(nproc)}
DATA_DIR=${DATA_DIR:-data}
OUT=${OUT:-campaign-out}
RUNS=${RUNS:-campaign-runs}
PYTHON=${PYTHON:-python3}
LIMIT=${LIMIT:-540}
ARGS=${ARGS:-}
[ $# -ge 1 ] || { echo "usage: bash device/campaign.sh TABLE[:GRID OVERRIDES] …" >&2; exit 2; }
case "$DEVICE" in gpu|cpu) ;; *) echo "error: DEVICE=$DEVICE: choose gpu or cpu" >&2; exit 2;; esac
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "error: hydra-core is missing and .whl holds no wheels: run bash device/fetch-wheels.sh where pip works, and carry .whl" >&2; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/anomaly-site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/anomaly-site"
fi
mkdir -p "$OUT"
[ "$DEVICE" = gpu ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
end=$((SECONDS + LIMIT))
status=0
declare -A seen=()
for spec in "$@"; do
  table=${spec%%:*}
  grid=""
  [ "$spec" != "$table" ] && grid=${spec#*:}
  # a table named twice (two variants, say) gets files of its own: TABLE, TABLE-2, …
  seen[$table]=$(( ${seen[$table]:-0} + 1 ))
  tag=$table
  [ "${seen[$table]}" -gt 1 ] && tag="$table-${seen[$table]}"
  left=$((end - SECONDS))
  if [ "$left" -lt 30 ]; then echo "skipped $tag: the time limit is spent" >&2; status=1; continue; fi
  log="$OUT/log-$tag.txt"
  # shellcheck disable=SC2086  # grid and ARGS are lists of overrides
  timeout "$left" "$PYTHON" -m anomaly.reproduce "table=$table" "budget=$BUDGET" "trainer=$DEVICE" \
    "jobs=$JOBS" "jobs_per_gpu=$JOBS_PER_GPU" "paths.data_dir=$DATA_DIR" "paths.log_dir=$RUNS" \
    trainer.enable_progress_bar=false $grid $ARGS 2>&1 | tee "$log" | grep -E "done ·|cells ok|error|Error"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "$tag: exit $rc (log $log)" >&2; status=1; }
  newest=$(ls -td "$RUNS"/reproduce/"$table"/"$BUDGET"/*/ 2>/dev/null | head -1)
  [ -n "$newest" ] && [ -f "$newest/cells.json" ] && cp "$newest/cells.json" "$OUT/cells-$tag.json"
  [ -d "reproduced/$table/$BUDGET" ] && [ "$BUDGET" != smoke ] && tar czf "$OUT/results-$tag.tgz" "reproduced/$table/$BUDGET"
done
echo "campaign: $SECONDS s; results in $OUT"
exit $status
