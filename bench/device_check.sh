#!/usr/bin/env bash
# One call on the GPU machine (device tool): device info, build with the ptxas report, GPU tests,
# compute-sanitizer on small LSTM/GRU cases, benchmarks against cuDNN; logs and JSON under $OUT,
# a short table last. Every stage has its own timeout; a failing stage does not stop the later
# ones, and the script exits non-zero if any stage failed. Budget: about 8 minutes in all.
#
#   bash bench/device_check.sh            # from the repository root; OUT defaults to /tmp/fastrnn_device_out
#
# At most 8 files come back from $OUT: build.log, tests.log, sanitize.log, bench.log, rnn.json,
# rnn_speedup.png, attention.json, decode.json. Stage budgets (seconds) can be changed through
# the environment (T_BUILD, T_TESTS, ...), e.g. T_BENCH_RNN=60 bash bench/device_check.sh.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastrnn_device_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
# Worst case 470 s of stages + a few seconds of set-up and summary: inside the 8-minute budget.
T_BUILD=${T_BUILD:-150}
T_TESTS=${T_TESTS:-70}
T_GPU_ALL=${T_GPU_ALL:-40}
T_SUITE=${T_SUITE:-35}
T_MEMCHECK=${T_MEMCHECK:-45}
T_RACECHECK=${T_RACECHECK:-40}
T_BENCH_RNN=${T_BENCH_RNN:-60}
T_BENCH_OTHER=${T_BENCH_OTHER:-15}
START=$(date +%s)
CUDA_BIN=${CUDA_HOME:-/usr/local/cuda}/bin
export PATH="$PATH:$CUDA_BIN"  # nvcc and compute-sanitizer, where the toolkit is not on PATH

names=(); results=(); secs=()
# run_stage NAME SECONDS LOGFILE CMD...: runs CMD under `timeout`, appending to LOGFILE.
run_stage() {
  local name=$1 limit=$2 log=$3; shift 3
  local t0 rc status
  t0=$(date +%s)
  echo "=== [$name] $* (limit ${limit}s)" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then status=ok
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMEOUT(${limit}s)"
  else status="FAIL(rc=$rc)"; fi
  names+=("$name"); results+=("$status"); secs+=($(( $(date +%s) - t0 )))
  tail -n 2 "$log"
  echo "=== [$name] $status" | tee -a "$log"
}

# Device and software versions.
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || nvidia-smi
  nvcc --version | tail -n 2
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/build.log"

# Build with the resource report (registers, spills, shared memory) of every kernel.
run_stage build "$T_BUILD" "$OUT/build.log" env FASTRNN_PTXAS_VERBOSE=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
  $PY -m pip install --no-build-isolation --no-deps -v -e .
$PY bench/summarize.py --ptxas "$OUT/build.log" 2>&1 | tee -a "$OUT/build.log" | grep -E "persistent|kernel" | head -n 30

# GPU tests: this family's first (most specific), then every other gpu-marked test in the suite,
# then the CUDA-relevant default tests (ops and modules, which pick the cuda/triton backends here).
run_stage tests_rnn_cuda "$T_TESTS" "$OUT/tests.log" $PY -m pytest -q -m gpu tests/ops/test_rnn_cuda.py --tb=short -p no:cacheprovider
run_stage tests_gpu_all "$T_GPU_ALL" "$OUT/tests.log" $PY -m pytest -q -m gpu tests --ignore tests/ops/test_rnn_cuda.py -p no:cacheprovider
run_stage tests_suite "$T_SUITE" "$OUT/tests.log" $PY -m pytest -q -m "not slow and not gpu" tests/ops tests/nn -p no:cacheprovider

# compute-sanitizer on small forward+backward cases, both paths (memcheck, then shared-memory races).
export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # exact allocation bounds for memcheck
run_stage memcheck "$T_MEMCHECK" "$OUT/sanitize.log" compute-sanitizer --tool memcheck --error-exitcode 1 \
  $PY bench/sanitize_small.py
run_stage racecheck "$T_RACECHECK" "$OUT/sanitize.log" compute-sanitizer --tool racecheck --error-exitcode 1 \
  $PY bench/sanitize_small.py --quick
unset PYTORCH_NO_CUDA_MEMORY_CACHING

# Benchmarks against cuDNN / eager PyTorch (their CLIs only; modules written by other helpers).
run_stage bench_rnn "$T_BENCH_RNN" "$OUT/bench.log" $PY -m fastrnn.bench rnn --device cuda --matrix full \
  --json "$OUT/rnn.json" --plot "$OUT/rnn_speedup.png"
for b in attention decode; do
  if [ -f "fastrnn/bench/$b.py" ]; then
    run_stage "bench_$b" "$T_BENCH_OTHER" "$OUT/bench.log" $PY -m fastrnn.bench "$b" --device cuda --json "$OUT/$b.json"
  else
    names+=("bench_$b"); results+=("absent"); secs+=(0)
  fi
done

# Short table last (the device tool's reply carries the end of the output).
echo
for j in "$OUT/rnn.json" "$OUT/attention.json" "$OUT/decode.json"; do
  [ -f "$j" ] && $PY bench/summarize.py "$j" --max-rows 24 2>&1
done
grep -E "passed|failed|error" "$OUT/tests.log" | grep -E "^[0-9=]|in [0-9.]+s" | tail -n 4
echo
echo "| stage | result | seconds |"
echo "|---|---|---|"
failed=0
for i in "${!names[@]}"; do
  echo "| ${names[$i]} | ${results[$i]} | ${secs[$i]} |"
  case "${results[$i]}" in ok|absent) ;; *) failed=1 ;; esac
done
echo "total: $(( $(date +%s) - START )) s; logs and JSON in $OUT"
exit $failed
