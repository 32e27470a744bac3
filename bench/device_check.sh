#!/usr/bin/env bash
# One call on the GPU machine (device tool): device info, build with the ptxas report, GPU tests,
# compute-sanitizer on small LSTM/GRU cases, benchmarks against cuDNN; logs and JSON under $OUT,
# a short table last. Every stage has its own timeout; a failing stage does not stop the later
# ones, and the script exits non-zero if any stage failed. Worst case about 10 minutes; on the H100
# (2026-11-26) the first call took 272 s (build 46 s); stages come in order of importance.
#
#   bash bench/device_check.sh            # from the repository root; OUT defaults to /tmp/fastrnn_device_out
#
# At most 8 files come back from $OUT: build.log, tests.log, sanitize.log, bench.log, rnn_cuda.json,
# paths.json, attention.json, decode.json, decode_profile.txt, rnn_triton.json (10: skip stages
# when all are needed). On the H100 (2026-11-27) the whole script minus the sanitizers, the paths
# and the Triton bench took 206 s (build 46 s); a startup took about 30 s.
# The speedup plot is drawn here afterwards, from the JSON: bench/summarize.py --plot. The rnn
# benches write their JSON after every row, so a stage stopped at its limit keeps what it measured.
# Stage budgets (seconds) can be changed through the environment, e.g.
# T_BENCH_RNN=60 bash bench/device_check.sh.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastrnn_device_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # scripts under bench/ import the in-place build
# SKIP: space-separated stage names to leave out, e.g. SKIP="bench_decode bench_attention" for a
# second call that only needs the rest.
SKIP=${SKIP:-}
T_BUILD=${T_BUILD:-180}
T_TESTS=${T_TESTS:-60}
T_GPU_ALL=${T_GPU_ALL:-60}
T_MEMCHECK=${T_MEMCHECK:-60}
T_RACECHECK=${T_RACECHECK:-40}
T_BENCH_RNN=${T_BENCH_RNN:-70}
T_BENCH_OTHER=${T_BENCH_OTHER:-25}
T_BENCH_DECODE=${T_BENCH_DECODE:-45}
T_TRITON_TESTS=${T_TRITON_TESTS:-60}
T_BENCH_TRITON=${T_BENCH_TRITON:-50}
T_PATHS=${T_PATHS:-110}
START=$(date +%s)
CUDA_BIN=${CUDA_HOME:-/usr/local/cuda}/bin
export PATH="$PATH:$CUDA_BIN"  # nvcc and compute-sanitizer, where the toolkit is not on PATH

names=(); results=(); secs=()
# run_stage NAME SECONDS LOGFILE CMD...: runs CMD under `timeout`, appending to LOGFILE.
run_stage() {
  local name=$1 limit=$2 log=$3; shift 3
  local t0 rc status
  case " $SKIP " in *" $name "*)
    names+=("$name"); results+=("skipped"); secs+=(0); return ;;
  esac
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
# In place, as `make build` does: the image's own torch is used (its headers may be older than CI's).
run_stage build "$T_BUILD" "$OUT/build.log" env FASTRNN_BUILD=cuda FASTRNN_PTXAS_VERBOSE=1 TORCH_CUDA_ARCH_LIST=9.0 \
  MAX_JOBS=16 $PY setup.py build_ext --inplace
$PY bench/summarize.py --ptxas "$OUT/build.log" 2>&1 | tee -a "$OUT/build.log" | grep -E "persistent|kernel" | head -n 30

# GPU tests: this family's first (most specific), then every other gpu-marked test in the suite
# that needs no Triton compilation (attention's cuda backend, double backward, the modules and
# greedy decoding with a CUDA graph on the GPU); the Triton tests come after the benchmarks,
# since their autotuning compiles for minutes. -v: one line a test as it finishes, so a stage
# stopped at its limit still says what failed.
run_stage tests_rnn_cuda "$T_TESTS" "$OUT/tests.log" $PY -m pytest -v -m gpu tests/ops/test_rnn_cuda.py --tb=short -p no:cacheprovider
run_stage tests_gpu "$T_GPU_ALL" "$OUT/tests.log" $PY -m pytest -v -m gpu tests/ops tests/nn --ignore tests/ops/test_rnn_cuda.py \
  --ignore tests/ops/test_rnn_triton.py -k "not triton" --tb=short -p no:cacheprovider

# compute-sanitizer on small forward+backward cases, both paths (memcheck, then shared-memory races).
export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # exact allocation bounds for memcheck
run_stage memcheck "$T_MEMCHECK" "$OUT/sanitize.log" compute-sanitizer --tool memcheck --error-exitcode 1 \
  $PY bench/sanitize_small.py
run_stage racecheck "$T_RACECHECK" "$OUT/sanitize.log" compute-sanitizer --tool racecheck --error-exitcode 1 \
  $PY bench/sanitize_small.py --quick
unset PYTORCH_NO_CUDA_MEMORY_CACHING

# Greedy decoding first (issue 6's GPU target), then the benchmarks against cuDNN / eager
# PyTorch, the CUDA C++ backend first; Triton's autotuning
# compiles many variants, so it comes last.
run_stage bench_decode "$T_BENCH_DECODE" "$OUT/bench.log" $PY -m fastrnn.bench decode --device cuda --json "$OUT/decode.json"
run_stage decode_profile "$T_BENCH_OTHER" "$OUT/bench.log" $PY bench/decode_profile.py --device cuda \
  --out "$OUT/decode_profile.txt"
run_stage bench_rnn_cuda "$T_BENCH_RNN" "$OUT/bench.log" $PY -m fastrnn.bench rnn --device cuda --matrix device \
  --impl cuda --json "$OUT/rnn_cuda.json"
# The two CUDA paths side by side (sets the auto choice); one JSON row per (cell, dtype, H, B, pass).
run_stage bench_paths "$T_PATHS" "$OUT/bench.log" $PY bench/cuda_paths.py --H 256,1024 --json "$OUT/paths.json"
# (no torch.compile baseline here: its compilation alone takes most of the stage's budget)
run_stage bench_attention "$T_BENCH_OTHER" "$OUT/bench.log" $PY -m fastrnn.bench attention --device cuda --no-compile \
  --backend cuda,triton \
  --json "$OUT/attention.json"
# (one tile config per kernel instead of autotuning: these check correctness, not speed)
run_stage tests_triton "$T_TRITON_TESTS" "$OUT/tests.log" env FASTRNN_TRITON_AUTOTUNE=0 \
  $PY -m pytest -v -m gpu tests/ops/test_rnn_triton.py tests/nn \
  -k "triton" --tb=short -p no:cacheprovider
run_stage bench_rnn_triton "$T_BENCH_TRITON" "$OUT/bench.log" $PY -m fastrnn.bench rnn --device cuda --matrix device \
  --impl triton --no-modules --json "$OUT/rnn_triton.json"

# Short table last (the device tool's reply carries the end of the output).
echo
for j in "$OUT/rnn_cuda.json" "$OUT/decode.json" "$OUT/attention.json" "$OUT/rnn_triton.json"; do
  [ -f "$j" ] && $PY bench/summarize.py "$j" --max-rows 24 2>&1
done
[ -f "$OUT/decode_profile.txt" ] && cat "$OUT/decode_profile.txt"
grep -E "passed|failed|error" "$OUT/tests.log" | grep -E "^[0-9=]|in [0-9.]+s" | tail -n 4
echo
echo "| stage | result | seconds |"
echo "|---|---|---|"
failed=0
for i in "${!names[@]}"; do
  echo "| ${names[$i]} | ${results[$i]} | ${secs[$i]} |"
  case "${results[$i]}" in ok|absent|skipped) ;; *) failed=1 ;; esac
done
echo "total: $(( $(date +%s) - START )) s; logs and JSON in $OUT"
exit $failed
