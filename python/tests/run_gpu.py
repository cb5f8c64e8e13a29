#!/usr/bin/env python3
"""Run python/tests/test_gpu.py without pytest (the GPU machine may lack it):
every test_* function, in order; prints PASS / FAIL / SKIP and a closing line."""
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.modules.setdefault("pytest", None)  # make test_gpu take its no-pytest path
import test_gpu  # noqa: E402

import torch  # noqa: E402

passed = failed = skipped = 0
names = [n for n in dir(test_gpu) if n.startswith("test_")]
names.sort(key=lambda n: getattr(test_gpu, n).__code__.co_firstlineno)
only = sys.argv[1:]
for n in names:
    if only and not any(o in n for o in only):
        continue
    t0 = time.time()
    if not torch.cuda.is_available():
        print("SKIP %s: GPU: no CUDA device here" % n)
        skipped += 1
        continue
    try:
        getattr(test_gpu, n)()
    except test_gpu.Skipped as e:
        print("SKIP %s: %s" % (n, e))
        skipped += 1
    except Exception:
        traceback.print_exc()
        print("FAIL %s (%.1fs)" % (n, time.time() - t0))
        failed += 1
    else:
        print("PASS %s (%.1fs)" % (n, time.time() - t0))
        passed += 1
    sys.stdout.flush()
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
