#!/usr/bin/env bash
# The README's CPU speed and memory figures in one go, all at one commit on one machine
# (about 10 minutes on a 2-core CPU; keep the machine otherwise idle while it runs):
#
#   OUT=/some/dir bash benchmarks/cpu_headline.sh
#
# 1. network forward at batch 1, the shipped weights: onnxruntime, onnxruntime-int8, torch,
#    and the numba refit (network_speed_cpu.json);
# 2. the same for weights/fast, float and 8 bits (network_speed_cpu_fast.json), right after;
# 3. end to end, a recording of the built-in input played as fast as possible, 10,000 frames:
#    frames/s, latency and resident memory growth (pipeline_speed_onnxruntime.json);
# 4. live use: frames arriving at 90 frames/s as from a D4xx camera, the tracker keeping the
#    newest, 3000 frames: dropped frames and the latency from each frame's due time
#    (pipeline_speed_onnxruntime_memory_paced90.json);
# 5. the same with weights/fast (pipeline_speed_onnxruntime_memory_paced90_fast.json).
#
# Each result records its machine, load, commit and command. Each benchmark warms the
# tracker up before it is timed, so an empty numba cache costs time, not figures. A failed step is
# reported and the others still run; the exit status is then 1. CPU_HEADLINE_SMOKE=1 runs
# every step tiny (tests/test_benchmark_helpers.py).
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  # The comment at the top of this file.
  sed -n '2,/^set -uo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "usage: OUT=DIR bash benchmarks/cpu_headline.sh (no arguments; --help says more)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-out/cpu_headline}
mkdir -p "$out"
if [ "${CPU_HEADLINE_SMOKE:-0}" = 1 ]; then
  speed=(--iterations 5 --warmup 2 --peak-repeats 2) capacity=(--input memory --frames 30 --warmup 10)
  live=(--frames 30 --warmup 10)
else
  speed=(--iterations 1000) capacity=(--frames 10000) live=(--frames 3000)
fi
failed=()
step() {  # step NAME COMMAND...
  local name=$1
  shift
  echo "=== $name ($(date -u +%H:%M:%S) UTC)"
  "$@" || failed+=("$name")
}

step "network speed, shipped weights" "$python" -m benchmarks.network_speed --backends onnxruntime,onnxruntime-int8,torch \
  "${speed[@]}" --out "$out/network_speed_cpu.json"
step "network speed, weights/fast" "$python" -m benchmarks.network_speed --weights weights/fast --backends onnxruntime,onnxruntime-int8 \
  "${speed[@]}" --out "$out/network_speed_cpu_fast.json"
step "end to end, as fast as possible" "$python" -m benchmarks.pipeline_speed "${capacity[@]}" --out "$out/pipeline_speed_onnxruntime.json"
step "live use at 90 frames/s" "$python" -m benchmarks.pipeline_speed --input memory "${live[@]}" --pace 90 \
  --out "$out/pipeline_speed_onnxruntime_memory_paced90.json"
step "live use at 90 frames/s, weights/fast" "$python" -m benchmarks.pipeline_speed --input memory "${live[@]}" --pace 90 \
  --weights weights/fast --out "$out/pipeline_speed_onnxruntime_memory_paced90_fast.json"

if [ ${#failed[@]} -gt 0 ]; then
  printf '!!! failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "results in $out"
