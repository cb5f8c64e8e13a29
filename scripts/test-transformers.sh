#!/usr/bin/env bash
# The transformers-facing Python tests (attn_implementation="sale", torch.compile
# of a model, sale.capture) once more against another transformers release,
# e.g. the GPU machine's:   scripts/test-transformers.sh 5.17.0
# transformers changes its behaviour between releases where sale depends on it:
# 5.17 builds a full causal mask while torch.compile traces (5.24 does not), which
# sent every layer of a compiled model to SDPA until sale registered its own mask
# function; the development machine's release could not show it. The release goes
# into .venv-transformers/VERSION (git-ignored) beside .venv's torch, with no
# dependencies of its own but those .venv lacks for it (pip's index is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
ver="${1:?usage: scripts/test-transformers.sh VERSION (e.g. 5.17.0)}"
PY=.venv/bin/python
[ -x "$PY" ] || { echo "test-transformers.sh: no .venv (run scripts/setup-python.sh first)" >&2; exit 1; }
dir=".venv-transformers/$ver"
if ! PYTHONPATH="$dir" "$PY" -c "import transformers, sys; sys.exit(transformers.__version__ != '$ver')" 2>/dev/null; then
  rm -rf "$dir"
  # 5.x before 5.2x: httpx for the hub client, huggingface-hub 1.x
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$dir" "transformers==$ver" \
    "huggingface-hub>=1.5,<2" httpx httpcore h11 anyio sniffio certifi idna
fi
PYTHONPATH="$dir" "$PY" -c "import transformers; print('test-transformers.sh: transformers', transformers.__version__, 'from', transformers.__file__)"
PYTHONPATH="$dir" "$PY" -m pytest -q -rs -p no:cacheprovider python/tests/test_hf.py python/tests/test_compile.py \
  python/tests/test_capture.py
