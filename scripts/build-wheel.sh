#!/usr/bin/env bash
# Build the Python wheel (libsale + the `sale` command + Lua/SQLite shared libs,
# py3-none-<platform>) into dist/. Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
rm -rf build-py/setuptools python/sale.egg-info dist/sale-*.whl
"$PY" -m pip wheel --no-deps -w dist/ . "$@"
ls -l dist/sale-*.whl
