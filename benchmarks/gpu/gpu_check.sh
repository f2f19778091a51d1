#!/usr/bin/env bash
# One prepared GPU check for the lent device machine (15 device minutes per task, its start included):
#   CPU machine:  bash benchmarks/gpu/fetch_wheels.sh
#   GPU machine:  run(command="bash benchmarks/gpu/gpu_check.sh --quick", carry=[".whl"], timeout_s=300)   # <= 4 min
#                 run(command="bash benchmarks/gpu/gpu_check.sh", carry=[".whl"], timeout_s=540)           # about 7 min
#                 run(command="bash benchmarks/gpu/gpu_check.sh --compare", carry=[".whl"], timeout_s=540)  # <= 9 min
#   anywhere:     bash benchmarks/gpu/gpu_check.sh --dry_run [--quick | --compare]   # CPU, tiny sizes: the same code path
# 1. installs the missing dependencies from .whl (no registry there), uses this checkout via PYTHONPATH, and
#    imports every project module and every bundled distribution with its declared requirements
#    (benchmarks/gpu/check_imports.py), before any training;
# 2. runs the CUDA tests (pytest -m cuda; they skip without a GPU);
# 3. trains LIDC 2d fold 0, Stage I then Stage II, GPU_CHECK_MINUTES each (1; --quick: 0.5), and a 3D toy
#    3d_fullres (Stage I and II as long; --quick: one Stage I step), at the planned configuration and precision,
#    and writes iterations/s, samples/s, peak GPU memory, the projected wall time of the planned schedule and
#    the seconds of each phase to $OUT/gpu_check.json (+ the logs beside it).
#    --compare [--data=PATH] instead: the four methods on LIDC 2d fold 0, GPU_COMPARE_SECONDS (45) each, held-out
#    prediction, the diffoseg_benchmark table and records (benchmarks/gpu/gpu_compare.py; PATH: a raw DatasetXXX_Name
#    folder or an LIDC .npz, default the subset in .whl/data), iterations/s per method and the projected hours of
#    the full planned schedule, into $OUT/gpu_check.json, $OUT/compare/ and $OUT/records/.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root
DRY_RUN=0
QUICK=0
COMPARE=0
DATA=
for arg in "$@"; do
    case "$arg" in
        --dry_run) DRY_RUN=1 ;;
        --quick) QUICK=1 ;;
        --compare) COMPARE=1 ;;
        --data=*) DATA=${arg#--data=} ;;
        *) echo "gpu_check: unknown argument $arg (use --dry_run, --quick, --compare [--data=PATH])" >&2; exit 2 ;;
    esac
done
[ "$QUICK$COMPARE" != 11 ] || { echo "gpu_check: --quick and --compare are two modes: give one" >&2; exit 2; }
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
MINUTES=${GPU_CHECK_MINUTES:-$([ "$QUICK" = 1 ] && echo 0.5 || echo 1)}
TEST_TIMEOUT=$([ "$QUICK$COMPARE" != 00 ] && echo 120 || echo 300)
export PYTHONUNBUFFERED=1
t0=$(date +%s)
IMPORT_ARGS=(--json "$OUT/imports.json")
if [ "$DRY_RUN" = 1 ]; then
    PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    PY=python3
    [ -d .whl ] || { echo "gpu_check: .whl/ missing: run benchmarks/gpu/fetch_wheels.sh here and carry .whl" >&2; exit 1; }
    # the wheels are LZMA-compressed zips (repack_wheels.py): pip reads them through zipfile, which needs lzma
    "$PY" -c "import lzma" || { echo "gpu_check: this Python has no lzma module to unpack .whl" >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site"
    IMPORT_ARGS+=(--wheels .whl)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" || true
fi
"$PY" benchmarks/gpu/check_imports.py "${IMPORT_ARGS[@]}" 2>&1 | tee "$OUT/imports.log" | grep -v '^ ' || true
grep -q ': ok$' "$OUT/imports.log" || { echo "gpu_check: import check failed, see $OUT/imports.log" >&2; exit 1; }
"$PY" -c "import torch; print('gpu_check: torch', torch.__version__, 'cuda', torch.cuda.is_available())"
t_install=$(date +%s)

set +e
"$PY" -m pytest tests -m cuda -q -p no:cacheprovider --timeout "$TEST_TIMEOUT" > "$OUT/pytest_cuda.log" 2>&1
CUDA_TESTS_RC=$?
set -e
tail -n 3 "$OUT/pytest_cuda.log"
t_tests=$(date +%s)
if [ "$COMPARE" = 1 ]; then
    PHASE=compare
    ARGS=(--out "$OUT" --seconds "${GPU_COMPARE_SECONDS:-45}")
    [ "$DRY_RUN" = 1 ] && ARGS+=(--dry_run --seconds "${GPU_COMPARE_SECONDS:-3}")
    [ -n "$DATA" ] && ARGS+=(--data "$DATA")
    "$PY" benchmarks/gpu/gpu_compare.py "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_compare.log" | grep -E '^gpu_compare:' || true
    PHASE_JSON="$OUT/gpu_compare.json"
else
    PHASE=training
    ARGS=(--out "$OUT/gpu_train.json" --minutes "$MINUTES")
    [ "$DRY_RUN" = 1 ] && ARGS+=(--dry_run)
    [ "$QUICK" = 1 ] && ARGS+=(--quick)
    "$PY" benchmarks/gpu/gpu_train_check.py "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_train.log" | grep -E '^\{' || true
    PHASE_JSON="$OUT/gpu_train.json"
fi
[ -f "$PHASE_JSON" ] || { echo "gpu_check: $PHASE failed, see ${PHASE_JSON%.json}.log" >&2; tail -n 20 "${PHASE_JSON%.json}.log" >&2; exit 1; }
t_train=$(date +%s)
"$PY" - "$OUT" "$CUDA_TESTS_RC" "$QUICK" "$((t_install - t0))" "$((t_tests - t_install))" "$((t_train - t_tests))" "$PHASE" "$PHASE_JSON" <<'PYEOF'
import json, re, sys
out, rc, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
install_s, tests_s, train_s = (int(v) for v in sys.argv[4:7])
phase, phase_json = sys.argv[7], sys.argv[8]
log = open(f"{out}/pytest_cuda.log").read()
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", log)}
train = json.load(open(phase_json))
report = {"quick": quick, "mode": phase, "cuda_tests": {"exit_code": rc, **counts}, **train,
          "phase_seconds": {"install_and_imports": install_s, "cuda_tests": tests_s, phase: train_s},
          "total_seconds": install_s + tests_s + train_s}
json.dump(report, open(f"{out}/gpu_check.json", "w"), indent=2)
print(json.dumps(report, indent=2))
PYEOF
