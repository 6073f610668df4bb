#!/usr/bin/env bash
# The whole GPU job in one run of at most ten minutes (a short rented slot), for a machine
# with an NVIDIA GPU and PyTorch (CUDA) but nothing of this project installed:
#
#   OUT=/some/dir bash benchmarks/gpu_session.sh [BUDGET_SECONDS]      (default 540)
#
# 0. one short tracking run that fills the numba kernels' cache;
# 1. the CUDA backend tests (CUDA graph vs eager torch; TensorRT where it is installed);
# 2. network speed at batch 1: torch-cuda (CUDA graph), torch on the CPU and eager on CUDA
#    (torch-cuda-eager), onnxruntime;
# 3. the whole tracking pipeline on the GPU, frames from memory, segmenting ahead in 3
#    worker processes and not at all, and with the network's output replayed (the ceiling
#    the CPU stages set);
# 4. the "gpu" training recipe, fine-tuning the shipped weights (GPU_SESSION_INIT_FROM=DIR:
#    other exported weights, such as weights/fast) for whatever is left of the budget (the
#    learning-rate schedule ends with the time), then export.
#
# The short measurements come first and each result is written to $OUT as soon as it
# exists, so a run cut short still leaves what was done. The results ($OUT, at most 8 files,
# each small enough to copy back from a remote machine): session.log (everything printed), network_speed_gpu.json,
# pipeline_speed_gpu_ahead3.json, pipeline_speed_gpu_ahead0.json,
# pipeline_speed_gpu_ahead3_replayed_network.json and gpu_training.tar.gz (export/ with dgn.pt, dgn.onnx, dgn.json; metrics.csv, config.json,
# summary.json). Then, where the project is installed:
#
#   mkdir -p runs/gpu && tar -xzf gpu_training.tar.gz -C runs/gpu
#   python -m tracker.quantize --weights runs/gpu/export      # the 8-bit network for onnxruntime-int8
#   python -m tracker.evaluate --weights runs/gpu/export --out runs/gpu/eval --frames 1000 --no-model-card
#
# If the export fails there, the archive holds state_dict.pt (the network's weights from the
# last checkpoint) instead of export/: load it into a DualGridNet and write it out with
# tracker.weights.export_weights, passing the crop frame it was trained in (train.data.crop_frame
# in the archive's config.json) and, as its training record, summary.json.
#
# Needs python3 with torch, numpy, numba, scipy, opencv-python-headless, onnx, onnxscript,
# onnxruntime, tqdm, matplotlib and pytest. GPU_SESSION_SMOKE=1 runs every stage tiny and
# on the CPU, to check the script itself (tests/test_gpu_session.py).
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  # The comment at the top of this file.
  sed -n '2,/^set -uo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
start=$(date +%s)
budget=${1:-540}
if [ $# -gt 1 ] || ! [[ $budget =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: OUT=DIR bash benchmarks/gpu_session.sh [BUDGET_SECONDS] (a whole number of seconds, default 540; --help says more)" >&2
  exit 2
fi
deadline=$((start + budget))
out=${OUT:-out/gpu_session}
run=${GPU_SESSION_RUN:-runs/gpu}
python=${PYTHON:-python3}
smoke=${GPU_SESSION_SMOKE:-0}
# The weights the training stage fine-tunes (weights/fast for the narrower network).
init_from=${GPU_SESSION_INIT_FROM:-weights}
if [ ! -f "$init_from/dgn.json" ]; then
  echo "GPU_SESSION_INIT_FROM=$init_from: no exported weights there (dgn.json)" >&2
  exit 2
fi
mkdir -p "$out" "$run"
log="$out/session.log"

if [ "$smoke" = 1 ]; then
  backends=onnxruntime,torch
  speed_args=(--iterations 5 --warmup 2 --peak-repeats 2)
  pipeline_backend=onnxruntime
  pipeline_frames=60
  # With a replay memory, as the gpu recipe has.
  train_args=(--recipe smoke --device cpu --replay-examples 8)
  # Seconds the training stage needs beyond its own budget: start-up and export.
  train_overhead=20
  # Seconds of training the measurements before it may not eat into.
  train_reserve=30
else
  backends=torch-cuda,torch,onnxruntime
  speed_args=()
  pipeline_backend=torch-cuda
  pipeline_frames=2000
  train_args=(--recipe gpu)
  # 14 data workers import torch and compile the numba renderer (~40 s), then the ONNX
  # export and the archive (~20 s).
  train_overhead=75
  train_reserve=120
fi

# Seconds before the deadline that a stage may not run into: the training's, until it starts.
# So a slow or stuck measurement costs that measurement, not the whole run.
held_back=$((train_overhead + train_reserve))
skip_reason="no time left before the training"
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh

stage "machine"
# 14 data workers pass their batches through shared memory, one file descriptor each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
echo "open files: $(ulimit -n); /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 " free of " $2 }')" | tee -a "$log"
machine_report

# Shared memory: each data worker keeps prefetch 4 batches of 128 examples (~100 KB each)
# in /dev/shm. A container's default 64 MB would kill the workers with a bus error, and the
# run's main result with them: make room if allowed, else fewer workers.
shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -lt 2048 ]; then
  if [ "$smoke" != 1 ]; then
    mount -o remount,size=8g /dev/shm 2>/dev/null
    shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
  fi
  if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -lt 2048 ]; then
    shm_workers=$((shm_free_mb / 120))
    [ "$shm_workers" -gt 14 ] && shm_workers=14
    train_args+=(--workers "$shm_workers")
    echo "/dev/shm has $shm_free_mb MB free: training with $shm_workers data workers" | tee -a "$log"
  fi
fi

first_checks "$run.warmup" 150 150 120 "$backends" "${speed_args[@]}"

# Segmenting ahead in 3 worker processes and not at all; then the same with the network's
# output replayed, which is what this machine's CPU allows at most.
for run_args in "ahead3 --segment-ahead 3" "ahead0 --segment-ahead 0" "ahead3_replayed_network --segment-ahead 3 --replay-network"; do
  set -- $run_args
  name=$1
  shift
  run_stage "pipeline ($name)" 90 "$python" -m benchmarks.pipeline_speed --input memory --frames "$pipeline_frames" \
    --backend "$pipeline_backend" "$@" --out "$out/pipeline_speed_gpu_$name.json"
done

now=$(date +%s)
train_seconds=$((deadline - now - train_overhead))
if [ "$train_seconds" -lt 30 ]; then
  stage "training skipped: ${train_seconds} s left for it"
  failed+=("training")
else
  minutes=$(awk "BEGIN { printf \"%.2f\", $train_seconds / 60 }")
  # Nothing of an earlier run on the same machine may be packed as this one's result.
  rm -rf "$run"
  held_back=0
  # The hard limit leaves the export room to finish; a run killed before it still leaves its
  # last checkpoint, packed below.
  run_stage "training (${minutes} min)" $((train_seconds + train_overhead - 15)) \
    "$python" -m tracker.train --out "$run" "${train_args[@]}" --max-minutes "$minutes" --no-resume --init-from "$init_from"
  stage "packing"
  files=()
  for f in metrics.csv config.json summary.json; do [ -e "$run/$f" ] && files+=("$f"); done
  # An export cut short (no manifest yet) is left out: with state_dict.pt beside it the
  # archive could outgrow what comes back, and a partial export is of no use.
  [ -f "$run/export/dgn.json" ] && files+=(export)
  if [ ! -f "$run/export/dgn.json" ] && [ -f "$run/last.pt" ]; then
    # No export: keep the network's weights alone (the checkpoint with its optimiser state
    # is larger than a file that comes back may be).
    "$python" -c "import sys, torch; torch.save(torch.load(sys.argv[1], map_location='cpu', weights_only=True)['network'], sys.argv[2])" \
      "$run/last.pt" "$run/state_dict.pt" 2>&1 | tee -a "$log" && files+=(state_dict.pt)
  fi
  if [ ${#files[@]} -gt 0 ]; then
    tar -czf "$out/gpu_training.tar.gz" -C "$run" "${files[@]}"
  fi
fi

finish
