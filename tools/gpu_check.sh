#!/usr/bin/env bash
# GPU check in one command, on a machine with an NVIDIA GPU, torch with CUDA and CuPy (no TensorRT, no
# ONNX Runtime GPU, no pycuda needed). From the repository root, with the venv active:
#
#     tools/gpu_check.sh [--quick] [--out DIR]
#
# 1. every `gpu`-marked test (pytest -m gpu): kernels through CuPy, TensorRT tests skip with the reason;
# 2. the kernel benchmark (benchmarks/preprocess_gpu.py: fused kernel vs the torch op chain vs the floor);
# 3. the node end to end with `preprocess: cuda` (CuPy kernels, kernels/launcher.py) on the demo drive and
#    on a 6-camera drive (benchmarks/node.py: realtime and fast pacing, per-stage times, table as in
#    benchmarks/RESULTS.md), with ONNX Runtime and with the torch CUDA engine (`engine: {kind: torch}`).
# Each step's output goes to DIR (default gpu_check_out/) and the tables to stdout; the exit status is
# the first failing step's. --quick: fewer benchmark runs (about 2 minutes in all).
set -u -o pipefail

quick=0
out=gpu_check_out
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a directory" >&2; exit 2; }; out="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (use --quick, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out" || exit 2
python - <<'EOF' || { echo "gpu_check: needs torch with CUDA and CuPy on an NVIDIA GPU" >&2; exit 2; }
import cupy, torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CuPy {cupy.__version__}")
EOF

status=0
step() {  # step NAME COMMAND...: run, keep the log, remember the first failure
    local name="$1"; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc)"; [ "$status" -ne 0 ] || status=$rc; }
}

runs=200; messages=500
[ "$quick" -eq 1 ] && { runs=40; messages=200; }
step gpu_tests python -m pytest -q -m gpu -rs tests/
step kernel_benchmark python benchmarks/preprocess_gpu.py --runs "$runs"
step node_3_cameras python benchmarks/node.py --preprocess cuda --messages "$messages"
step node_6_cameras python benchmarks/node.py --preprocess cuda --cameras 6 --messages "$messages"
step node_torch_cuda python benchmarks/node.py --preprocess cuda --engine torch --cameras 3 6 --messages "$messages"
echo "gpu_check: logs in $out/; exit $status"
exit "$status"
