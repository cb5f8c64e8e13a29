"""The bench's median tool (bench/ab_median.py), which decides whether a
change or a target is inside the run-to-run spread: its parse of the
bench's tables, its medians and its change column, on the CPU."""
import pathlib
import subprocess
import sys

TOOL = pathlib.Path(__file__).resolve().parents[2] / "bench" / "ab_median.py"

ROW = ("| N | tau | density | SDPA cuDNN | our dense | two-pass fixed | quantize + select + attend |"
       " d x dense | attend / (d x dense) | rel L1 | cuDNN / fixed |\n"
       "|---|---|---|---|---|---|---|---|---|---|---|\n"
       "|    128K |  0.00184 | 0.0505 |    250.0 |   231.9 |    {t} |   1.4 +   {s} +   18.4 |"
       "   11.7 |  1.57x | 0.1926 |  2.98x |\n")


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


def test_self_test_passes():
    r = run("--self-test")
    assert r.returncode == 0, r.stderr
    assert "self-test passed" in r.stdout


def test_medians_and_change_over_rounds(tmp_path):
    base = tmp_path / "base.md"
    new = tmp_path / "bench.md"
    # rounds as gpu-ab.sh appends them: whole tables, one after another
    base.write_text("".join(ROW.format(t=t, s=s) for t, s in [("84.0", "65.0"), ("83.0", "64.0"), ("90.0", "70.0")]))
    new.write_text("".join(ROW.format(t=t, s=s) for t, s in [("80.0", "62.0"), ("81.0", "63.0"), ("79.0", "61.0")]))
    r = run(f"main={base}", f"this={new}")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("| 128K"))
    assert "84.0 [83.0-90.0] n=3" in line      # the median, not the mean (85.7)
    assert "80.0 [79.0-81.0] n=3" in line
    assert "1.40 + 65.00 + 18.40" in line      # per-part medians
    assert "-4.8%" in line                     # (80 - 84) / 84
    assert "3.12x" in line                     # cuDNN 250 / 80


def test_bad_input_is_an_error_not_a_table(tmp_path):
    empty = tmp_path / "empty.md"
    empty.write_text("bench rc=1\n")
    assert run(f"a={empty}").returncode == 1
    assert run(f"a={tmp_path / 'missing.md'}").returncode == 1
    assert run().returncode == 2
    assert run("no-equals-sign").returncode == 2
    assert run("--help").returncode == 0


GPU_AB = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu-ab.sh"


def test_gpu_ab_anchors_are_checked_and_written_without_sdpa(tmp_path):
    """gpu-ab.sh --anchors: malformed lines refused before anything runs; good
    ones written as the bench's anchors file, and no SDPA run (no torch here)."""
    script = tmp_path / "gpu-ab.sh"
    script.write_text(GPU_AB.read_text())
    bad = subprocess.run(["bash", str(script), "--anchors", "cudnn 65536"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--anchors takes" in bad.stderr
    assert not (tmp_path / "anchors.txt").exists()
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(script), "--skip-tests", "--skip-check", "--anchors",
                        "cudnn 65536 57.7,flash 131072 424.0"], capture_output=True, text=True, env=env, timeout=60)
    assert "anchors given (no SDPA run)" in r.stdout
    assert (tmp_path / "anchors.txt").read_text().split("\n")[:2] == ["cudnn 65536 57.7", "flash 131072 424.0"]
    assert "sdpa:" not in r.stdout + r.stderr
    helptext = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True).stdout
    assert "--anchors" in helptext


def test_bench_calibrated_options_are_checked_before_any_gpu_work():
    """bench_calibrated --thr takes run or fixed (anything else: exit 2 with the
    reason, before a context or a GPU is needed); --help lists --thr and
    --per-head (the per-head lines that told a diffuse head's generalisation
    from a kernel mismatch in the tenth session)."""
    exe = pathlib.Path(__file__).resolve().parents[2] / "build" / "bench_calibrated"
    if not exe.exists():
        import pytest
        pytest.skip(f"{exe} is not built (scripts/setup.sh builds it)")
    bad = subprocess.run([str(exe), "--thr", "sometimes"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--thr takes run or fixed" in bad.stderr
    for v in ("half", "1.5", "-0.1"):
        bad = subprocess.run([str(exe), "--dense-above", v], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and "--dense-above takes a fraction in [0, 1]" in bad.stderr, (v, bad.stderr)
    helptext = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    assert helptext.returncode == 0 and "--thr run|fixed" in helptext.stderr and "--per-head" in helptext.stderr
    assert "--dense-above D" in helptext.stderr


def test_gpu_ab_packs_raw_files_when_the_device_would_drop_some(tmp_path):
    """With bases, gpu-ab.sh packs the raw runs into raw.tgz (the device tool
    brings back at most 8 files): ab.md and log.txt stay beside it, and the
    archive holds every build's runs."""
    import tarfile
    bundle = tmp_path / "gpu"
    bundle.mkdir()
    (bundle / "gpu-ab.sh").write_text(GPU_AB.read_text())
    (bundle / "ab_median.py").write_text(TOOL.read_text())
    table = ROW.format(t="80.1", s="60.0")
    fake = "#!/bin/sh\nprintf '%s' '" + table.replace("'", "'\\''") + "'\n"
    dirs = [bundle] + [bundle / d for d in ("base", "base2", "base3")]
    for i, d in enumerate(dirs):
        d.mkdir(exist_ok=True)
        (d / "bench_attention").write_text(fake)
        (d / "bench_attention").chmod(0o755)
        if i:
            (d / "REV").write_text(f"rev{i} abc{i}\n")
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out)}
    r = subprocess.run(["bash", str(bundle / "gpu-ab.sh"), "--skip-tests", "--skip-check", "--rounds", "2",
                        "--anchors", "cudnn 131072 250.0"], capture_output=True, text=True, env=env, timeout=120)
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert set(files) == {"ab.md", "log.txt", "raw.tgz"}, (files, r.stdout, r.stderr)
    with tarfile.open(out / "raw.tgz") as t:
        names = set(t.getnames())
    assert {"bench.md", "base.md", "base2.md", "base3.md"} <= names, names
    assert "rev3" in (out / "ab.md").read_text()
    assert "raw.tgz" in (out / "log.txt").read_text()


SASS = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "sass.py"
SALE = pathlib.Path(__file__).resolve().parents[2] / "build" / "sale"
KI = pathlib.Path(__file__).resolve().parents[2] / "examples" / "kernel_info.lua"


def test_sass_counts_a_real_cubin_and_its_difference(tmp_path):
    """scripts/sass.py on a cache the real CLI compiled (NVRTC): an sm_90a
    dense kernel has its wgmma (HGMMA) and TMA loads counted, a kernel set
    beside itself changes by 0, a key the base lacks is said, and a key whose
    code differs (here another ring depth's cubin under the same key, as two
    builds would store it) shows its deltas."""
    import os
    import pytest
    if not SALE.exists():
        pytest.skip("no build/sale (cmake --build build)")
    r = subprocess.run([sys.executable, str(SASS), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--base" in r.stdout
    env = dict(os.environ)
    a, b = tmp_path / "a", tmp_path / "b"
    for d, stages in ((a, 3), (b, 2)):
        env["SALE_CACHE_DIR"] = str(d)
        # one key text in both caches, compiled from different tiles: the delta must show
        key = "dense:d=128,dt=bf16,arch=sm_90a"
        c = subprocess.run([str(SALE), "run", str(KI), key.replace("arch", f"stages={stages},arch")],
                           capture_output=True, text=True, env=env)
        assert c.returncode == 0, c.stdout + c.stderr
    r = subprocess.run([sys.executable, str(SASS), str(a / "kernels.db")], capture_output=True, text=True)
    if "no cuobjdump" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    counts = dict(tok.rsplit(" ", 1) for tok in r.stdout.splitlines()[1].strip().split("  "))
    assert int(counts["HGMMA"]) > 0 and int(counts["UTMALDG"]) > 0, r.stdout
    assert int(counts["LDL"]) == 0 and int(counts["total"]) > int(counts["HGMMA"])
    same = subprocess.run([sys.executable, str(SASS), "--base", str(a / "kernels.db"), str(a / "kernels.db")],
                          capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    assert "most changed: none" in same.stdout
    # no key in common: said, not a silent empty table
    other = subprocess.run([sys.executable, str(SASS), "--base", str(a / "kernels.db"), str(b / "kernels.db")],
                           capture_output=True, text=True)
    assert other.returncode == 0 and "no kernel of this key" in other.stdout, other.stdout
    import sqlite3
    con = sqlite3.connect(str(b / "kernels.db"))
    base_key = sqlite3.connect(str(a / "kernels.db")).execute("SELECT key FROM kernels").fetchone()[0]
    con.execute("UPDATE kernels SET key = ?", (base_key,))
    con.commit()
    con.close()
    diff = subprocess.run([sys.executable, str(SASS), "--base", str(a / "kernels.db"), str(b / "kernels.db")],
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stderr
    assert "most changed: none" not in diff.stdout and "most changed: " in diff.stdout, diff.stdout
    # the table's deltas are new - base; the totals of two ring depths may come out equal
    # (7b113ec's dense kernel: 2,016 both, with 8 UIMAD, 7 UMOV, ... moved), so the rows are checked
    rows = {l.split()[0]: l.split()[1:] for l in diff.stdout.splitlines()[2:] if len(l.split()) == 4}
    assert rows and all(int(d) == int(n) - int(b) for b, n, d in rows.values()), diff.stdout
    bad = subprocess.run([sys.executable, str(SASS), str(tmp_path / "missing.db")], capture_output=True, text=True)
    assert bad.returncode != 0 and "no such cache" in bad.stderr


def test_bench_numbers_are_checked_not_atoi(tmp_path):
    """The benchmarks took numbers with atoi/atof: "64k" ran 64 tokens, "x" ran
    0 reps, a ninth length was dropped, a missing --anchors file gave a table
    without anchors, and bench_calibrated made its --dir before finding no
    GPU. Each is now exit 2 naming the option (before any GPU work), and
    without a GPU bench_calibrated makes nothing."""
    import pytest
    build = pathlib.Path(__file__).resolve().parents[2] / "build"
    cases = [
        ("bench_attention", ["--lens", "64k"], "--lens takes an integer"),
        ("bench_attention", ["--lens", ",".join(str(1024 * i) for i in range(1, 10))], "at most 8 entries"),
        ("bench_attention", ["--lens", ",4096"], "comma list"),
        ("bench_attention", ["--reps", "x"], "--reps takes an integer"),
        ("bench_attention", ["--tau", "0.004,2"], "--tau takes a number in [0, 1)"),
        ("bench_attention", ["--tau", "nan"], "--tau takes a number"),
        ("bench_attention", ["--density", "0"], "--density takes fractions"),
        ("bench_attention", ["--heads", "32", "5"], "multiple of the kv heads"),
        ("bench_attention", ["--anchors", str(tmp_path / "none.txt")], "cannot read it"),
        ("bench_calibrated", ["--seeds", "9"], "--seeds takes an integer in [1, 8]"),
        ("bench_calibrated", ["--budgets", "0.01,abc"], "--budgets takes a number"),
        ("bench_calibrated", ["--anchors", str(tmp_path / "none.txt")], "cannot read it"),
        ("bench_host", ["--iters", "1e3"], "--iters takes an integer"),
        ("bench_host", ["--burst", "0"], "--burst takes an integer"),
        ("bench_invariance", ["--mode", "sparse"], "--mode takes fused or two_pass"),
        ("bench_invariance", ["--lens", "32768x"], "--lens takes an integer"),
        ("rows_timeline", ["--out", str(tmp_path / "t"), "--calls", "-1"], "--calls takes an integer"),
        ("qz_code_check", ["2x"], "usage: qz_code_check"),
    ]
    bad_anchor = tmp_path / "bad.txt"
    bad_anchor.write_text("cudnn 65536 58.0\ncudnn 131072\n")
    cases.append(("bench_attention", ["--anchors", str(bad_anchor)], "bad.txt:2: expected"))
    for exe, args, want in cases:
        path = build / exe
        if not path.exists():
            pytest.skip(f"{path} is not built")
        r = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
        assert r.returncode == 2, (exe, args, r.returncode, r.stdout[-300:], r.stderr[-300:])
        assert want in r.stderr, (exe, args, r.stderr)
    # no GPU here: bench_calibrated says so and leaves no --dir behind
    out = tmp_path / "calib_out"
    r = subprocess.run([str(build / "bench_calibrated"), "--dir", str(out)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    if r.returncode == 0:
        pytest.skip("a GPU is present: bench_calibrated ran")
    assert r.returncode == 1 and r.stderr.strip(), r.stderr
    assert not out.exists(), "bench_calibrated made --dir without a GPU"
