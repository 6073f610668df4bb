#!/usr/bin/env bash
# The GPU speed checks without the training, in about three minutes (each stage is cut off at
# 60 to 90 s, and all of them by 9.5 minutes), for a short slot on a machine with an NVIDIA GPU and
# PyTorch (CUDA) but nothing of this project installed:
#
#   OUT=/some/dir bash benchmarks/gpu_pipeline.sh [WORKERS]     (default: 3)
#
# 1. one short tracking run that fills the numba kernels' cache;
# 2. the backend tests (the CUDA graph against eager torch; TensorRT where it is installed),
#    then network speed at batch 1 on torch-cuda (CUDA graph);
# 3. the whole tracking pipeline on the GPU, frames from memory, segmenting ahead in WORKERS
#    worker processes; then with the network's output replayed (the ceiling the CPU stages
#    set), with a capture thread reading the frames (one ahead) instead of the tracker thread
#    itself (tracker.pipeline.default_read_ahead), without the online refinement
#    (--no-refine: segment to refit and output alone, what the refinement costs), and with
#    no side checks (--side-check-every 0, as with --hand left|right: what the checks cost);
# 4. live use: frames arriving at 90 frames/s as from a camera, the tracker keeping the newest
#    (no workers), and the latency from each frame's due time;
# 5. where the tracker thread spends its time: a cProfile of the main thread (the worker
#    processes are not in it), the top functions by own and total time, at the log's end.
#
# Results in $OUT: session.log, network_speed_gpu.json, pipeline_speed_gpu_aheadN.json,
# pipeline_speed_gpu_aheadN_replayed_network.json, pipeline_speed_gpu_aheadN_read_ahead1.json,
# pipeline_speed_gpu_aheadN_no_refine.json,
# pipeline_speed_gpu_aheadN_side_check_every0.json, pipeline_speed_gpu_paced90.json (8 files,
# as many as the device machine brings back). Each is written as soon as it exists, so a run cut short
# keeps what was done. Needs what benchmarks/gpu_session.sh needs. GPU_SESSION_SMOKE=1 runs
# every stage tiny and on the CPU (tests/test_gpu_session.py).
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  # The comment at the top of this file.
  sed -n '2,/^set -uo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
start=$(date +%s)
out=${OUT:-out/gpu_pipeline}
python=${PYTHON:-python3}
smoke=${GPU_SESSION_SMOKE:-0}
most=${1:-3}
if [ $# -gt 1 ] || ! [[ $most =~ ^(0|[1-9][0-9]*)$ ]]; then
  echo "usage: OUT=DIR bash benchmarks/gpu_pipeline.sh [WORKERS] (one whole number, default 3; --help says more)" >&2
  exit 2
fi
mkdir -p "$out"
log="$out/session.log"
: >"$log"
# Each stage has its own limit, and none runs past 9.5 minutes from the start (the later ones
# are cut short or skipped where the earlier ones ran long), so that the whole job fits a
# 10-minute slot, the kill grace and the listing at the end included.
deadline=$((start + 570))

if [ "$smoke" = 1 ]; then
  backend=onnxruntime speed_backends=onnxruntime speed_args=(--iterations 5 --warmup 2 --peak-repeats 2) frames=60 profile_frames=60 live_frames=60
else
  backend=torch-cuda speed_backends=torch-cuda speed_args=() frames=2000 profile_frames=1000 live_frames=1000
fi

# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh

machine_report
first_checks "$out.warmup" 90 60 60 "$speed_backends" "${speed_args[@]}"

run_stage "pipeline ($most workers)" 60 "$python" -m benchmarks.pipeline_speed --input memory --frames "$frames" \
  --backend "$backend" --segment-ahead "$most" --out "$out/pipeline_speed_gpu_ahead$most.json"
run_stage "pipeline ($most workers, network replayed)" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$frames" --backend "$backend" --segment-ahead "$most" --replay-network \
  --out "$out/pipeline_speed_gpu_ahead${most}_replayed_network.json"
run_stage "pipeline ($most workers, capture thread)" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$frames" --backend "$backend" --segment-ahead "$most" --read-ahead 1 \
  --out "$out/pipeline_speed_gpu_ahead${most}_read_ahead1.json"
run_stage "pipeline ($most workers, no refinement)" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$frames" --backend "$backend" --segment-ahead "$most" --no-refine \
  --out "$out/pipeline_speed_gpu_ahead${most}_no_refine.json"
run_stage "pipeline ($most workers, no side checks)" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$frames" --backend "$backend" --segment-ahead "$most" --side-check-every 0 \
  --out "$out/pipeline_speed_gpu_ahead${most}_side_check_every0.json"
run_stage "live, 90 frames/s" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$live_frames" --backend "$backend" --pace 90 --out "$out/pipeline_speed_gpu_paced90.json"

rm -f "$out.warmup/main_thread_profile.txt"  # an earlier run's, were this one cut short
run_stage "main-thread profile ($most workers)" 60 "$python" -m benchmarks.pipeline_speed --input memory \
  --frames "$profile_frames" --backend "$backend" --segment-ahead "$most" --profile "$out.warmup/main_thread_profile.txt" \
  --out "$out.warmup/profiled.json"
if [ -f "$out.warmup/main_thread_profile.txt" ]; then
  { echo "=== where the tracker thread spent its time ($most workers)"; cat "$out.warmup/main_thread_profile.txt"; } >>"$log"
fi

finish
