#!/usr/bin/env bash
# The GPU check of issue 10 (xpgan.bench.gpu_check; the same as `xpgan bench gpu`), runnable from the repository
# root on a machine where xpgan is not installed: it puts a link named `xpgan` to this checkout on PYTHONPATH.
#
#   bash bench/gpu_check.sh [--cpu-only] [--tiny] [--sections env,agree,...] [--max-seconds 450]
#       [--train-modes xpgan,baseline] [--amp fp32] [--cudnn-benchmark on,off] [--limits train=200]
#
# Writes gpu_check.json and gpu_check.log into $OUT (default ./gpu_check_out) and prints a summary.
# Needs python3 with torch, numba + numba-cuda, numpy<2.5, zarr, numcodecs, dask, distributed, nibabel, pydicom,
# isal (the env section stops with a one-line reason when one is missing).  Sections are time-boxed and
# failure-isolated; the whole check is capped at --max-seconds (default 450 s).
#
# Device machine (one NVIDIA H200, no network), from the repository root, with carry [".whl"] (wheels of
# zarr numcodecs donfig google-crc32c dask distributed partd locket zict tblib tornado nibabel pydicom isal and
# numpy 2.4.6: the image's numpy 2.5 breaks numba-cuda 0.30's compile), timeout_s 520; 8 minutes at most:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && nvidia-smi -L; timeout 480 bash bench/gpu_check.sh --max-seconds 450
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg="$(mktemp -d "${TMPDIR:-/tmp}/xpgan_pkg.XXXXXX")"
ln -s "$root" "$pkg/xpgan"
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
if ! "$py" -c "import xpgan.bench.gpu_check" 2>/dev/null; then
    echo "gpu check: cannot import xpgan from $root with $py:" >&2
    "$py" -c "import xpgan.bench.gpu_check" 2>&1 | tail -1 >&2
    exit 2
fi
"$py" -m xpgan.bench.gpu_check --out "${OUT:-gpu_check_out}" "$@"
rc=$?
rm -f "$pkg/xpgan"; rmdir "$pkg" 2>/dev/null
exit $rc
