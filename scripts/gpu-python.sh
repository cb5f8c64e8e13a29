#!/usr/bin/env bash
# On the GPU machine, from the repository root with dist/ (scripts/build-wheel.sh)
# carried over: install the wheel into /tmp/site (no index, no deps: torch and
# transformers are the machine's), then run the GPU Python tests and the
# per-call overhead benchmark. pytest if the machine has it, else run_gpu.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
whl=$(ls -t dist/sale-*.whl 2>/dev/null | head -1)
[ -n "$whl" ] || { echo "gpu-python.sh: no dist/sale-*.whl (run scripts/build-wheel.sh first)" >&2; exit 1; }
rm -rf /tmp/site
"$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$whl" || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64; do
  [ -e "$d/libnvrtc.so.13" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && break
done
export SALE_CACHE_DIR="${SALE_CACHE_DIR:-/tmp/sale-py-cache}"
cd /tmp  # import the installed package, not python/ of the checkout
"$PY" -c "import sale, json; print(json.dumps(sale.cache_info(), indent=1))" || exit 1
cd - >/dev/null
rc=0
if "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pytest -p no:cacheprovider -s -rs python/tests/test_gpu.py "$@" || rc=1
else
  "$PY" python/tests/run_gpu.py "$@" || rc=1
fi
"$PY" bench/py_overhead.py 2000 || rc=1
exit $rc
