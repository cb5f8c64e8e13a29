#!/usr/bin/env python3
"""sass.py: opcode counts of the cubins in a sale cache, read with cuobjdump +
nvidia's nvdisasm; no GPU needed. Before spending device time on a kernel
change, compare its SASS with main's: the static counts show what ptxas did
(the twenty-fourth session's lesson: one more loop-carried value moved the rows
kernel's ring arithmetic from uniform registers, UIADD3, to per-thread ones,
R2UR + IMAD, and cost it 24% more instructions; ptxas's register report said
nothing).

usage: scripts/sass.py [--base BASE.db] [--ops OP,OP,...] [--top N] CACHE.db [KEY-PART ...]

  CACHE.db      a sale cache (compile into a scratch one:
                SALE_CACHE_DIR=/tmp/new ./build/sale run examples/kernel_info.lua KEY ...)
  KEY-PART      only kernels whose key contains every part (e.g. attend warps=5)
  --base B.db   print each kernel of CACHE beside the kernel of the same key in B
                (the same key compiled by main's build) and the opcodes whose
                counts changed most
  --ops         the opcodes shown (default: the GEMMs, TMA, the uniform/per-thread
                movers, barriers, local memory)
  --top N       with --base, the N opcodes that changed most (default 12)

cuobjdump: $SALE_CUOBJDUMP, else /usr/local/cuda/bin, else .venv's
nvidia-cuda-cuobjdump + nvidia-cuda-nvdisasm wheels (scripts/setup-python.sh).
Counts are static (instructions in the code), not executed ones: ncu on the
device says how often each runs.
"""
import argparse
import collections
import glob
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OPS = ["HGMMA", "IGMMA", "HMMA", "IMMA", "UTMALDG", "SYNCS", "BAR", "R2UR", "UIADD3", "IMAD", "LDL", "STL"]
INSN = re.compile(r"^\s*/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


def find_tool():
    env = os.environ.get("SALE_CUOBJDUMP")
    if env:
        return env
    for d in ["/usr/local/cuda/bin"] + sorted(glob.glob(os.path.join(ROOT, ".venv/lib/python3*/site-packages/nvidia/cu*/bin"))):
        if os.access(os.path.join(d, "cuobjdump"), os.X_OK) and os.access(os.path.join(d, "nvdisasm"), os.X_OK):
            return os.path.join(d, "cuobjdump")
    sys.exit("sass.py: no cuobjdump with nvdisasm beside it (set SALE_CUOBJDUMP, or run scripts/setup-python.sh)")


def counts_of(tool, cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        d = os.path.dirname(tool)
        env = dict(os.environ, NVDISASM_PATH=d, PATH=d + os.pathsep + os.environ.get("PATH", ""))
        p = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit("sass.py: %s -sass failed (%d): %s" % (tool, p.returncode, (p.stderr or p.stdout).strip()[:400]))
    c = collections.Counter()
    for line in p.stdout.splitlines():
        m = INSN.match(line)
        if m:
            c[m.group(1)] += 1
    if not c:
        sys.exit("sass.py: %s printed no instructions" % tool)
    return c


def kernels(db, parts):
    if not os.path.exists(db):
        sys.exit("sass.py: no such cache: %s" % db)
    from urllib.parse import quote  # a path with '?', '#' or '%' is not a URI; quoted from its bytes
    con = sqlite3.connect("file:%s?mode=ro" % quote(os.fsencode(os.path.abspath(db))), uri=True)
    try:
        rows = con.execute("SELECT key, arch, cubin FROM kernels ORDER BY key, arch, created").fetchall()
    except sqlite3.Error as e:
        sys.exit("sass.py: %s: %s" % (db, e))
    finally:
        con.close()
    out = {}
    for key, arch, cubin in rows:
        if all(p in key for p in parts):
            out[(key, arch)] = bytes(cubin)  # the newest row of a key wins
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("cache")
    ap.add_argument("parts", nargs="*")
    ap.add_argument("--base")
    ap.add_argument("--ops", default=",".join(DEFAULT_OPS))
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    ops = [o for o in a.ops.split(",") if o]
    tool = find_tool()
    new = kernels(a.cache, a.parts)
    if not new:
        sys.exit("sass.py: no kernel in %s matches %s" % (a.cache, " ".join(a.parts) or "(all)"))
    base = kernels(a.base, a.parts) if a.base else {}
    for (key, arch), cubin in new.items():
        c = counts_of(tool, cubin)
        print("%s [%s]" % (key, arch))
        if (key, arch) not in base:
            if a.base:
                print("  (no kernel of this key in %s)" % a.base)
            print("  " + "  ".join("%s %d" % (o, c[o]) for o in ["total"] + ops if o != "total") +
                  "  total %d" % sum(c.values()))
            continue
        b = counts_of(tool, base[(key, arch)])
        print("  %-10s %8s %8s %8s" % ("opcode", "base", "new", "delta"))
        for o in ops + ["total"]:
            x, y = (sum(b.values()), sum(c.values())) if o == "total" else (b[o], c[o])
            print("  %-10s %8d %8d %+8d" % (o, x, y, y - x))
        moved = sorted(set(b) | set(c), key=lambda o: -abs(c[o] - b[o]))
        moved = [o for o in moved if c[o] != b[o]][:a.top]
        print("  most changed: " + (", ".join("%s %+d" % (o, c[o] - b[o]) for o in moved) or "none"))


if __name__ == "__main__":
    main()
