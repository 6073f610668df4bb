# Shared by benchmarks/gpu_session.sh and benchmarks/gpu_pipeline.sh (sourced, not run):
# stage logging, time-limited stages, the machine report and the speed checks both start with.
#
# The sourcing script sets: start (seconds since the epoch), deadline (the same; no stage
# runs past it), log (a file), python; and may set held_back (seconds before the deadline
# that stages leave free, for what comes after them; 0 if unset) and skip_reason (what the
# log says of a stage with no time left).

# tr holds its output back in a pipe; line by line, a run cut short still logs what ran.
line_buffered=""
command -v stdbuf >/dev/null 2>&1 && line_buffered="stdbuf -oL"
failed=()
held_back=${held_back:-0}
skip_reason=${skip_reason:-no time left for it}

stage() {  # stage NAME: log the stage's start, seconds into the job and seconds left
  local now
  now=$(date +%s)
  echo "=== $1 (t=$((now - start)) s, $((deadline - now)) s left)" | tee -a "$log"
}

# run_stage NAME SECONDS COMMAND...: run with a time limit (cut to what is left before the
# deadline less held_back), log its output, note a failure. So a slow or stuck stage costs
# that stage, not the ones after it.
run_stage() {
  local name=$1 limit=$2 left
  shift 2
  stage "$name"
  left=$((deadline - $(date +%s) - held_back))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    echo "!!! $name skipped: $skip_reason" | tee -a "$log"
    failed+=("$name")
    return 0
  fi
  # Progress bars' lines are left out of the log: thousands of them, and nothing to read.
  timeout --kill-after=10 "$limit" "$@" 2>&1 | $line_buffered tr '\r' '\n' \
    | grep --line-buffered -v -E '^(training|held-out synthetic): ' | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "!!! $name failed (exit $rc)" | tee -a "$log"
    failed+=("$name")
  fi
  return 0
}

machine_report() {  # the GPU, its driver and the Python packages the measurements depend on
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"; } | tee -a "$log"
  "$python" - 2>&1 <<'PYTHON' | tee -a "$log"
import platform, numba, numpy, onnxruntime, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}), "
      f"numpy {numpy.__version__}, numba {numba.__version__}, onnxruntime {onnxruntime.__version__}, {len(__import__('os').sched_getaffinity(0))} CPUs")
PYTHON
}

# first_checks SCRATCH_DIR COMPILE_SECONDS TESTS_SECONDS SPEED_SECONDS BACKENDS [NETWORK_SPEED_ARGS...]:
# one short tracking run that fills the numba kernels' cache, so no timed stage after it pays
# for the compilation (a fresh machine has no cache), with the backend the command line picks
# by itself, which must be torch-cuda on a GPU machine (GPU_SESSION_SMOKE=1: onnxruntime, on
# the CPU); the backend tests (the CUDA graph
# against eager torch; TensorRT where it is installed); network speed at batch 1 on
# BACKENDS (comma-separated) into $out/network_speed_gpu.json.
first_checks() {
  local scratch=$1 compile_s=$2 tests_s=$3 speed_s=$4 backends=$5
  shift 5
  local choice=() expected=torch-cuda
  if [ "${smoke:-0}" = 1 ]; then
    choice=(--backend onnxruntime) expected=onnxruntime
  fi
  run_stage "compile" "$compile_s" "$python" run_tracker.py --source synthetic --max-frames 3 --no-viewer \
    "${choice[@]}" --out "$scratch/x.jsonl"
  if ! grep -q "backend: $expected;" "$log"; then
    echo "!!! the command line did not pick $expected by itself (see the compile stage above)" | tee -a "$log"
    failed+=("backend choice")
  fi
  run_stage "backend tests" "$tests_s" "$python" -m pytest -q -p no:cacheprovider tests/test_backends.py
  run_stage "network speed" "$speed_s" "$python" -m benchmarks.network_speed --backends "$backends" "$@" \
    --out "$out/network_speed_gpu.json"
}

# finish: list the results and exit 1 if any stage failed.
finish() {
  stage "done"
  ls -la "$out" | tee -a "$log"
  if [ ${#failed[@]} -gt 0 ]; then
    echo "failed stages: ${failed[*]}" | tee -a "$log"
    exit 1
  fi
}
