#!/usr/bin/env python3
"""Medians over rounds of bench_attention tables, one column per build.

gpu-ab.sh --rounds R runs every build's bench R times, alternating the builds
within each round, and appends each run's markdown to that build's file
(bench.md, base.md, ...). Figures move 2-3% from call to call and about 1%
from run to run within a call; one run per build cannot tell a 1% change, or
a target 1% from its line. This script reads those files and prints, per
(N, tau) row of the tables that split the time into quantize + select +
attend, each build's median over the rounds with its spread, and the change
of every build against the first file's.

usage: ab_median.py NAME=FILE [NAME=FILE ...]   (the first is the reference)
       ab_median.py --self-test
"""
import re
import statistics
import sys

PARTS = ("two-pass", "quantize", "select", "attend")


def parse(text):
    """{(N, tau): {"density": str, "cudnn": float|None, part: [values]}} from
    every table row whose header names 'quantize + select + attend'."""
    rows = {}
    cols = None
    for line in text.splitlines():
        if not line.startswith("|"):
            cols = None if not line.strip() else cols
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "quantize + select + attend" in cells:
            cols = cells
            continue
        if cols is None or set(line) <= set("|- "):
            continue
        if len(cells) != len(cols):
            continue
        get = dict(zip(cols, cells))
        split = get["quantize + select + attend"].split("+")
        if len(split) != 3:
            continue
        total_col = next((c for c in cols if c.startswith("two-pass")), None)
        cudnn_col = next((c for c in cols if "cuDNN" in c and "/" not in c), None)
        try:
            vals = [float(get[total_col])] + [float(x) for x in split]
        except (TypeError, ValueError):
            continue
        key = (get["N"], get["tau"])
        r = rows.setdefault(key, {"density": get.get("density", "?"), "cudnn": [],
                                  **{p: [] for p in PARTS}})
        for p, v in zip(PARTS, vals):
            r[p].append(v)
        if cudnn_col:
            try:
                r["cudnn"].append(float(get[cudnn_col]))
            except ValueError:
                pass
    return rows


def nkey(k):
    n = k[0]
    return (float(n[:-1]) * 1024 if n.endswith("K") else float(n), -float(k[1]))


def report(builds):
    names = [n for n, _ in builds]
    keys = sorted({k for _, rows in builds for k in rows}, key=nkey)
    out = []
    out.append("Medians over rounds (ms; [min-max] of the two-pass total; n = runs). "
               "Change: against " + names[0] + ".")
    out.append("")
    head = "| N | tau | density | cuDNN |"
    sep = "|---|---|---|---|"
    for n in names:
        head += f" {n}: two-pass | {n}: q + s + a | {n}: cuDNN / SALE |"
        sep += "---|---|---|"
        if n != names[0]:
            head += f" {n}: change |"
            sep += "---|"
    out += [head, sep]
    for k in keys:
        ref = builds[0][1].get(k)
        dens = next((rows[k]["density"] for _, rows in builds if k in rows), "?")
        # the anchors are measured once a call: one value, unless files of several calls were joined
        cuds = [c for _, rows in builds if k in rows for c in rows[k]["cudnn"]]
        cud = statistics.median(cuds) if cuds else None
        line = f"| {k[0]} | {k[1]} | {dens} | {f'{cud:.1f}' if cud else '-'} |"
        for n, rows in builds:
            r = rows.get(k)
            if not r or not r["two-pass"]:
                line += " - | - | - |" + (" - |" if n != names[0] else "")
                continue
            t = r["two-pass"]
            med = statistics.median(t)
            parts = " + ".join(f"{statistics.median(r[p]):.2f}" for p in PARTS[1:])
            ratio = f"{cud / med:.2f}x" if cud else "-"
            line += f" {med:.1f} [{min(t):.1f}-{max(t):.1f}] n={len(t)} | {parts} | {ratio} |"
            if n != names[0]:
                if ref and ref["two-pass"]:
                    rm = statistics.median(ref["two-pass"])
                    line += f" {100.0 * (med - rm) / rm:+.1f}% |"
                else:
                    line += " - |"
        out.append(line)
    return "\n".join(out)


SAMPLE = """
| N | tau | density | SDPA cuDNN | our dense | two-pass fixed | quantize + select + attend | d x dense | attend / (d x dense) | rel L1 | cuDNN / fixed |
|---|---|---|---|---|---|---|---|---|---|---|
|     64K |  0.00653 | 0.0102 |     58.7 |    57.8 |    %s |   0.7 +   14.6 +    1.9 |    0.6 |  3.25x | 0.1347 |  3.35x |
|    128K |  0.00184 | 0.0505 |    251.6 |   231.9 |    84.3 |   1.4 +   67.2 +   18.4 |   11.7 |  1.57x | 0.1926 |  2.98x |
"""


def self_test():
    a = parse(SAMPLE % "17.5" + SAMPLE % "17.9" + SAMPLE % "17.6")
    assert a[("64K", "0.00653")]["two-pass"] == [17.5, 17.9, 17.6], a
    assert a[("128K", "0.00184")]["select"] == [67.2, 67.2, 67.2]
    assert a[("64K", "0.00653")]["cudnn"] == [58.7, 58.7, 58.7]
    b = parse(SAMPLE % "16.0")
    text = report([("main", a), ("new", b)])
    assert "17.6 [17.5-17.9] n=3" in text, text
    assert "-9.1%" in text, text  # (16.0 - 17.6) / 17.6
    assert "3.34x" in text, text  # 58.7 / 17.6
    assert parse("no table here") == {}
    print("ab_median.py: self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(__doc__)
        return 0
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.stderr.write(__doc__)
        return 2
    builds = []
    for a in argv[1:]:
        name, path = a.split("=", 1)
        try:
            with open(path) as f:
                builds.append((name, parse(f.read())))
        except OSError as e:
            sys.stderr.write(f"ab_median.py: {path}: {e.strerror}\n")
            return 1
    if not any(rows for _, rows in builds):
        sys.stderr.write("ab_median.py: no 'quantize + select + attend' table in any file\n")
        return 1
    print(report(builds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
