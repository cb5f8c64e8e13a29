# Shared fixtures: a private cache file per test session, and the GPU marker
# that skips (visibly, with the reason) where torch sees no CUDA device.
import os
import sys
import tempfile

import pytest

try:  # an installed sale (the wheel) wins; else the checkout's python/
    import sale  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("SALE_CACHE_DIR", tempfile.mkdtemp(prefix="sale-pytest-"))


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="GPU: no CUDA device here (torch.cuda.is_available() is False)")
    for it in items:
        if "gpu" in it.keywords:
            it.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    n = len([r for r in terminalreporter.stats.get("skipped", []) if "GPU" in str(r.longrepr)])
    if n:
        terminalreporter.write_line("sale: %d GPU tests SKIPPED (no CUDA device); run scripts/gpu-python.sh on the "
                                    "GPU machine" % n, yellow=True)
