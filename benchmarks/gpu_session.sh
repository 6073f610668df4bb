#!/usr/bin/env bash
# The whole GPU job in one call, for a machine with an NVIDIA GPU and PyTorch (CUDA) but
# nothing else installed: train the "gpu" recipe, evaluate the result, measure the GPU
# backends and the whole tracking pipeline, and pack weights, logs and results into
# $OUT/gpu_run.tar.gz.
#
#   OUT=/some/dir bash benchmarks/gpu_session.sh [MAX_TRAIN_MINUTES]
#
# Needs numpy, numba, scipy, opencv-python-headless, onnx, onnxruntime, tqdm, matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out=${OUT:-out/gpu_session}
minutes=${1:-9}
run=runs/gpu
mkdir -p "$out" "$run"
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/session.log"

# Starts from the shipped weights: the CPU-trained model is a head start, not a constraint.
"$python" -m tracker.train --out "$run" --recipe gpu --max-minutes "$minutes" --no-resume --init-from weights 2>&1 \
  | tr '\r' '\n' | grep -v '^training: ' | tee -a "$out/session.log"
"$python" -m tracker.evaluate --weights "$run/export" --out "$run/eval" --frames 1000 --no-model-card 2>&1 \
  | tr '\r' '\n' | grep -v '^held-out synthetic: ' | tee -a "$out/session.log"
"$python" -m benchmarks.network_speed --weights "$run/export" --backends torch-cuda,torch,onnxruntime \
  --out "$run/network_speed_gpu.json" 2>&1 | tee -a "$out/session.log"
# End to end on the GPU box (frames from memory: no RealSense SDK there). A failure here
# must not lose the trained weights above, so it only logs.
for mode in segment-ahead no-segment-ahead; do
  "$python" -m benchmarks.pipeline_speed --input memory --frames 5000 --backend torch-cuda --$mode \
    --out "$run/pipeline_speed_gpu_$mode.json" 2>&1 | tee -a "$out/session.log" \
    || echo "pipeline benchmark ($mode) failed" | tee -a "$out/session.log"
done
files="export eval metrics.csv config.json summary.json network_speed_gpu.json"
for f in "$run"/pipeline_speed_gpu_*.json; do [ -f "$f" ] && files="$files $(basename "$f")"; done
tar -czf "$out/gpu_run.tar.gz" -C "$run" $files
ls -la "$out"
