# Hostile inputs at the Python door: everything is refused before the C call
# (or the GPU) with sale.InvalidArgument naming the argument; nothing is cut
# silently (ctypes wraps a Python int into a C int and cuts a str at a NUL
# byte without a word), and nothing gives a silent wrong result.
import logging
import os
import threading

import pytest
import torch

import sale
from sale import _lib

gpu = pytest.mark.gpu


def qkv(Hq=4, Hkv=2, N=128, D=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, H, N, D, dtype=dtype, generator=g) for H in (Hq, Hkv, Hkv)]


def raises(match, fn, *a, **kw):
    with pytest.raises(sale.InvalidArgument, match=match) as e:
        fn(*a, **kw)
    assert e.value.status_name == "SALE_ERR_INVALID" and isinstance(e.value, ValueError)
    return e.value


def has_thresholds():
    if not hasattr(_lib.load(), "sale_thresholds_get"):
        pytest.skip("this libsale does not store thresholds (sale_thresholds_get missing)")


# ------------------------------------------------- ints that a C int cannot hold

def test_int_options_are_not_wrapped_into_a_c_int():
    q, k, v = qkv()
    # 2**32 + 64 was block_q 64 in C; 2**32 - 1 was dense_below -1 (never dense)
    raises(r"block_q: 4294967360 is out of range", sale.reference_attention, q, k, v, block_q=2 ** 32 + 64)
    raises(r"dense_below: 4294967295 is out of range", sale.reference_attention, q, k, v, dense_below=2 ** 32 - 1)


def test_threshold_layer_is_not_wrapped(tmp_path):
    has_thresholds()
    with sale.Context(cache=str(tmp_path / "c.db")) as ctx:
        sale.put_thresholds("m", 0, [0.1, 0.2], context=ctx)
        # layer 2**32 read (and wrote) layer 0
        raises(r"layer: 4294967296 is out of range", sale.thresholds, "m", 2 ** 32, 2, context=ctx)
        raises(r"layer: 4294967297 is out of range", sale.put_thresholds, "m", 2 ** 32 + 1, [0.3, 0.3],
               context=ctx)
        raises(r"samples: 4294967299 is out of range", sale.put_thresholds, "m", 1, [0.3], samples=2 ** 32 + 3,
               context=ctx)
        q, k, v = qkv(Hq=2, Hkv=2)
        raises(r"tau: layer: 4294967296 is out of range", sale.reference_attention, q, k, v, tau=("m", 2 ** 32),
               context=ctx)


def test_huge_dimension_is_named_not_wrapped():
    # 2**31 rows (4 GiB of address space, never touched): C saw seq_len -2147483648
    q = torch.empty((1, 1, 2 ** 31, 1), dtype=torch.float16)
    raises(r"q: seq_len 2147483648 is too large", sale.reference_attention, q, q, q)


# ------------------------------------------------------ strings with NUL bytes

def test_nul_bytes_are_refused_not_cut(tmp_path):
    raises(r"cache: contains a NUL byte", sale.Context, cache=str(tmp_path / "a\0b"))  # opened tmp_path/a
    assert not (tmp_path / "a").exists()
    raises(r"fleet: contains a NUL byte", sale.Context, cache=str(tmp_path / "c.db"), fleet=str(tmp_path / "f\0"))
    raises(r"key: contains a NUL byte", sale.format_key, "fused:d=128\0,d=64")  # was fused:d=128
    q, k, v = qkv()
    raises(r"tau: model: contains a NUL byte", sale.reference_attention, q, k, v, tau=("m\0x", 0))


def test_nul_in_threshold_model_name(tmp_path):
    has_thresholds()
    with sale.Context(cache=str(tmp_path / "c.db")) as ctx:
        sale.put_thresholds("m", 0, [0.1], context=ctx)
        raises(r"model: contains a NUL byte", sale.thresholds, "m\0other", 0, 1, context=ctx)  # read "m"
        raises(r"model: contains a NUL byte", sale.put_thresholds, "m\0x", 0, [0.2], context=ctx)
        assert sale.thresholds("m", 0, 1, context=ctx) == pytest.approx([0.1])


def test_prewarm_key_with_nul_is_refused():
    # arch "sm_80\0" compiled thr=run where thr=fixed was asked: the key was cut before ",thr=fixed"
    raises(r"key: contains a NUL byte", sale.prewarm, archs=("sm_80\0",), families=("fused",), head_dims=(64,),
           dtypes=("bf16",), thrs=("fixed",), jobs=1)


# ------------------------------------------------------- wrong types, wrong class

def test_wrong_types_raise_invalid_argument():
    q, k, v = qkv()
    ref = sale.reference_attention
    raises(r"scale: must be a finite number > 0", ref, q, k, v, scale="x")  # was TypeError
    raises(r"scale: must be a finite number > 0", ref, q, k, v, scale=[1.0])
    raises(r"mode: 'auto', 'fused'", ref, q, k, v, mode=["dense"])  # was TypeError: unhashable
    raises(r"tau: expected a float", ref, q, k, v, tau=["a"] * 4)  # was ValueError from float()
    raises(r"tau: expected a float", ref, q, k, v, tau=(b"m", 0))
    raises(r"q: a torch.sparse_coo tensor", ref, q.to_sparse(), k, v)  # was RuntimeError (data pointer)
    raises(r"k: empty tensor \(no kv heads\)", ref, q, k[:, :0], v[:, :0])  # was "not a multiple of 0 kv heads"


def test_tau_string_is_not_a_per_head_list():
    q, k, v = qkv()
    raises(r"tau: expected a float", sale.reference_attention, q, k, v, tau="0000")  # ran as [0, 0, 0, 0]


def test_tau_false_is_not_served_from_the_plan_of_tau_0():
    q, k, v = qkv()
    sale.reference_attention(q, k, v, tau=0)
    raises(r"tau: expected a float", sale.reference_attention, q, k, v, tau=False)


def test_plan_cache_does_not_change_what_is_refused(tmp_path):
    # the plan cache's key compared settings by ==: scale=True was refused alone but served from the plan of
    # scale=1, block_q=64.0 from that of 64, layer True or 1.0 from that of layer 1; each is refused either way
    has_thresholds()
    q, k, v = qkv()
    with sale.Context(cache=str(tmp_path / "c.db")) as ctx:
        sale.put_thresholds("m", 1, [0.01] * 4, context=ctx)
        for name, good, bad, why in (("scale", 1, True, r"scale: must be a finite number > 0"),
                                     ("block_q", 64, 64.0, r"block_q: expected an int, got 64.0"),
                                     ("block_q", 64, True, r"block_q: expected an int, got True"),
                                     ("dense_below", 1, True, r"dense_below: expected an int, got True"),
                                     ("est_bits", 8, 8.0, r"est_bits: expected an int, got 8.0"),
                                     ("tau", ("m", 1), ("m", True), r"layer index >= 0, got True"),
                                     ("tau", ("m", 1), ("m", 1.0), r"layer index >= 0, got 1.0"),
                                     ("tau", 0, False, r"tau: expected a float")):
            for _ in range(2):  # refused before the good value's plan exists, and after
                raises(why, sale.reference_attention, q, k, v, context=ctx, **{name: bad})
                sale.reference_attention(q, k, v, context=ctx, **{name: good})


def test_per_head_tau_from_an_iterator():
    # the plan key read the iterator empty: "0 per-head values given for 4 query heads" (unless the plan of
    # the same values as a list was cached, which hid it)
    q, k, v = qkv()
    taus = [0.011, 0.021, 0.031, 0.041]
    got = sale.reference_attention(q, k, v, tau=iter(taus))
    assert torch.equal(got, sale.reference_attention(q, k, v, tau=taus))
    assert torch.equal(sale.reference_attention(q, k, v, tau=iter(taus)), got)


def test_scale_that_is_zero_as_a_float32_is_refused():
    q, k, v = qkv()
    # 1e-50 is 0.0f in C, which means 1/sqrt(head_dim): a different softmax, silently
    raises(r"scale: must be a finite number > 0", sale.reference_attention, q, k, v, scale=1e-50)


def test_threshold_api_wrong_types(tmp_path):
    has_thresholds()
    with sale.Context(cache=str(tmp_path / "c.db")) as ctx:
        raises(r"model: expected a str, got 5", sale.thresholds, 5, 0, 2, context=ctx)  # was AttributeError
        raises(r"heads: -1 is out of range", sale.thresholds, "m", 0, -1, context=ctx)
        raises(r"layer: expected an int", sale.thresholds, "m", "0", 2, context=ctx)  # was ctypes.ArgumentError
        raises(r"tau: expected a per-head list of floats", sale.put_thresholds, "m", 0, "0", context=ctx)
        raises(r"budget: a finite number >= 0", sale.put_thresholds, "m", 0, [0.1], budget=float("nan"),
               context=ctx)


def test_context_and_prewarm_wrong_types():
    raises(r"cache: expected a path", sale.Context, cache=5)
    raises(r"keys: expected key text or a list", sale.prewarm, 5)
    raises(r"jobs: expected an int", sale.prewarm, [], jobs="2")


def test_mask_to_blocks_checks_its_arguments():
    m = torch.zeros(1, 1, 2, 1, dtype=torch.int32)
    raises(r"mask: expected the int32 kept-block mask", sale.mask_to_blocks, [[1]], 3)
    raises(r"mask: expected the int32 kept-block mask", sale.mask_to_blocks, m.float(), 3)
    raises(r"num_kblocks: -1 is out of range", sale.mask_to_blocks, m, -1)  # was 31 columns
    raises(r"num_kblocks: 100 blocks, the mask's 1 words hold 32", sale.mask_to_blocks, m, 100)


# ------------------------------------------------------------- silent wrong results

def test_out_whose_elements_overlap_is_refused():
    q, k, v = qkv()
    # every head's rows on one buffer: heads overwrite each other (a wrong result, silently)
    o = torch.empty(4 * 128 * 64 + 64).as_strided((1, 4, 128, 64), (0, 64, 64, 1))
    raises(r"out: its elements overlap each other", sale.reference_attention, q, k, v, out=o)


def test_out_that_is_an_input_is_refused():
    q, k, v = qkv(Hq=2, Hkv=2)
    for name, t in (("q", q), ("k", k), ("v", v)):
        raises(r"out: overlaps %s in memory" % name, sale.reference_attention, q, k, v, out=t)
    # also on a repeated call (the plan for these shapes is cached)
    sale.reference_attention(q, k, v, out=torch.empty_like(q))
    raises(r"out: overlaps k in memory", sale.reference_attention, q, k, v, out=k)


def test_inputs_that_require_grad_are_refused():
    q, k, v = qkv()
    qg = q.clone().requires_grad_()
    raises(r"sale has no backward", sale.reference_attention, qg, k, v)  # out had no grad_fn, silently
    with torch.no_grad():
        sale.reference_attention(qg, k, v)


# ------------------------------------------------------------------- contexts

def test_close_waits_for_a_call_in_progress(tmp_path):
    ctx = sale.Context(cache=str(tmp_path / "c.db"))
    closed = threading.Event()
    with ctx._lock:  # a call in progress on another thread holds the lock
        t = threading.Thread(target=lambda: (ctx.close(), closed.set()))
        t.start()
        assert not closed.wait(0.3)  # sale_destroy under a running call was a use after free
        assert ctx._h is not None
    t.join(10)
    assert closed.is_set() and ctx._h is None


def test_closed_default_context_is_replaced():
    sale.default_context().close()
    q, k, v = qkv()
    sale.reference_attention(q, k, v)  # was "sale: this context is closed", forever


@gpu
def test_attention_on_a_closed_context_is_refused():
    q, k, v = [t.cuda().half() for t in qkv()]
    ctx = sale.Context()
    sale.attention(q, k, v, context=ctx)  # the plan (and its workspace size) is now cached
    ctx.close()
    with pytest.raises(sale.SaleError, match="context is closed"):  # was a NULL sale_ctx to sale_attention
        sale.attention(q, k, v, context=ctx)


def test_cache_info_with_uri_characters_in_the_path(tmp_path):
    d = tmp_path / "a?b#c%d"
    d.mkdir()
    with sale.Context(cache=str(d / "c.db")) as ctx:
        sale.compile("dense:d=64,dt=bf16,arch=sm_80", context=ctx)
        info = sale.cache_info(ctx)
    assert "error" not in info and info.get("kernels", 0) >= 1


def test_cache_info_counts_a_cache_whose_path_is_not_utf8(tmp_path):
    """The path went into the read-only sqlite3 URI as a str, which UTF-8 cannot encode when the
    name has a byte such as 0xff (os.fsdecode's surrogate): the counts came back as an "error"."""
    d = os.fsencode(str(tmp_path)) + b"/x\xff"
    try:
        os.mkdir(d)
    except OSError as e:
        pytest.skip("this filesystem refuses a file name that is not UTF-8: %s" % e)
    with sale.Context(cache=d + b"/c.db") as ctx:
        sale.compile("dense:d=64,dt=bf16,arch=sm_80", context=ctx)
        sale.put_thresholds("m", 0, [0.01, 0.02], context=ctx)
        info = sale.cache_info(ctx)
    assert "error" not in info, info["error"]
    assert info["kernels"] >= 1 and info["thresholds"] >= 1


# --------------------------------------------------------------- hf and calib

transformers_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("transformers") is None, reason="transformers is not installed")


@pytest.fixture
def hf_settings():
    from sale import hf
    saved = hf.configure()
    yield hf
    hf.configure(**saved)


def test_hf_configure_refuses_bad_settings(hf_settings):
    hf = hf_settings
    raises(r"cpu: 'sdpa' or 'reference', got 'refrence'", hf.configure, cpu="refrence")  # was silently SDPA
    raises(r"mode: one of", hf.configure, mode="sparse")
    raises(r"tau: a float in \[0, 1\)", hf.configure, tau=2.0)
    raises(r"min_len: an int >= 0", hf.configure, min_len="0")
    raises(r"model: a model name", hf.configure, model=5)
    assert hf.configure()["cpu"] == "sdpa"  # nothing of a refused call is kept


@transformers_missing
def test_hf_config_sale_model_not_a_str(hf_settings):
    from tinyllama import tiny_llama
    hf = hf_settings
    hf.configure(cpu="reference", min_len=0)
    m = tiny_llama("sale")
    m.config.sale_model = 5  # was tau=(5, layer): "tau: 2 per-head values given for 4 query heads"
    with torch.no_grad():
        raises(r"config.sale_model: expected a model name", m, torch.randint(0, 1000, (1, 64)))


@transformers_missing
def test_hf_training_falls_back_to_sdpa(hf_settings, monkeypatch, caplog):
    from tinyllama import tiny_llama
    hf = hf_settings
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("sale has no backward"))
    hf.configure(cpu="reference", min_len=0)
    m = tiny_llama("sale")
    monkeypatch.setattr(hf, "_grad_told", False)
    with caplog.at_level(logging.WARNING, logger="sale"):
        m(torch.randint(0, 1000, (1, 64))).logits.sum().backward()
        m(torch.randint(0, 1000, (1, 64)))
    assert m.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    told = [r for r in caplog.records if "no backward" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]  # said once, not per layer or call


@transformers_missing
def test_nested_capture_of_one_model_is_refused(tmp_path):
    from tinyllama import tiny_llama
    m = tiny_llama("sdpa")
    with pytest.raises(sale.InvalidArgument, match="already being captured"):  # was a RecursionError
        with torch.no_grad(), sale.capture(m, str(tmp_path / "a")), sale.capture(m, str(tmp_path / "b")):
            m(torch.randint(0, 1000, (1, 64)))
    assert m.config._attn_implementation == "sdpa"


def test_calibrate_checks_its_arguments(tmp_path):
    raises(r"model: a non-empty str", sale.calibrate, str(tmp_path), model=None)  # was TypeError in subprocess
    raises(r"model: a non-empty str", sale.calibrate, str(tmp_path), model="a\0b")
    raises(r"device: a non-empty str", sale.calibrate, str(tmp_path), model="a", device=3)
    raises(r"extra_args: a list", sale.calibrate, str(tmp_path), model="a", extra_args="--x")  # was '-', '-', 'x'
    raises(r"directory: a path without NUL", sale.calibrate, str(tmp_path) + "\0", model="a")
    assert os.listdir(tmp_path) == []


def test_read_safetensors_names_a_malformed_file(tmp_path):
    import json
    import struct
    from sale.calib import read_safetensors

    def write(name, header, data=b""):
        h = json.dumps(header).encode() if not isinstance(header, bytes) else header
        p = tmp_path / name
        p.write_bytes(struct.pack("<Q", len(h)) + h + data)
        return str(p)

    good = write("good.safetensors", {"q": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    assert read_safetensors(good)["q"].shape == (2,)
    bad = [write("short", b"{"), write("notjson", b"{nope", b""),
           write("nodtype", {"q": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
           write("past", {"q": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}, b"\0" * 8),
           write("shape", {"q": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
           write("dtype", {"q": {"dtype": "I7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
           write("list", [1, 2])]
    p = tmp_path / "huge"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    bad.append(str(p))
    for path in bad:  # were json, Key, Attribute or Runtime errors from inside, or a silently short tensor
        with pytest.raises(sale.InvalidArgument, match="not a safetensors file"):
            read_safetensors(path)


def test_capture_layers_must_be_indices(tmp_path):
    for bad in (5, "01", [0, -1], [0.5], [True]):  # 5 was a TypeError, "01" a set of characters
        with pytest.raises(sale.InvalidArgument, match="layers: an iterable of layer indices"):
            sale.capture(object(), str(tmp_path), layers=bad)
    assert sale.capture(object(), str(tmp_path), layers=range(2)).layers == {0, 1}


def test_numpy_scalars_are_numbers():
    np = pytest.importorskip("numpy")
    q, k, v = qkv()
    ref = sale.reference_attention(q, k, v, tau=0.01, block_q=64)
    out = sale.reference_attention(q, k, v, tau=np.float32(0.01), block_q=np.int64(64))
    assert torch.equal(out, ref)  # np.float32(0.01) is 0.01 as the C float: the same result
    raises(r"out of range", sale.reference_attention, q, k, v, block_q=np.int64(2 ** 32 + 64))


def test_a_relative_cache_path_stays_the_same_file_after_chdir(tmp_path, monkeypatch):
    """Context('rel.db') then os.chdir: cache_path was kept relative, so
    sale.calibrate's `sale --cache rel.db` wrote a new file in the new directory
    and the thresholds were not found through the context. The library makes the
    path absolute when the context is created."""
    monkeypatch.chdir(tmp_path)
    ctx = sale.Context(cache="rel.db")
    assert ctx.cache_path == os.path.join(str(tmp_path), "rel.db")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert ctx.cache_path == os.path.join(str(tmp_path), "rel.db")


def test_write_safetensors_refuses_what_sale_cannot_read(tmp_path):
    """bool / int / float64 tensors raised a bare KeyError, a pathlib.Path a TypeError,
    a tensor named __metadata__ was written and then dropped on read, and a failed
    write left <path>.tmp behind."""
    t = torch.zeros(2, 3, dtype=torch.float16)
    for bad in (torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.int32),
                torch.zeros(2, dtype=torch.float64)):
        with pytest.raises(sale.InvalidArgument, match="dtype"):
            sale.write_safetensors(str(tmp_path / "x.safetensors"), {"q": bad})
    with pytest.raises(sale.InvalidArgument, match="__metadata__"):
        sale.write_safetensors(str(tmp_path / "x.safetensors"), {"__metadata__": t})
    p = tmp_path / "p.safetensors"
    sale.write_safetensors(p, {"q": t})  # a pathlib.Path
    assert torch.equal(sale.read_safetensors(p)["q"], t)
    with pytest.raises(OSError):
        sale.write_safetensors(str(tmp_path / "no" / "dir" / "x.safetensors"), {"q": t})
    with pytest.raises(sale.InvalidArgument, match="dtype"):
        sale.write_safetensors(str(tmp_path / "y.safetensors"), {"q": t, "k": object()})
    (tmp_path / "adir").mkdir()  # the rename onto a directory fails after the data is written
    with pytest.raises(OSError):
        sale.write_safetensors(str(tmp_path / "adir"), {"q": t})
    assert not list(tmp_path.glob("*.tmp")), "a failed write left its .tmp"


def test_a_cache_path_that_is_not_utf8(tmp_path):
    """Context(cache=bytes) takes any file name the OS does, but cache_path decoded it
    as UTF-8: a name with byte 0xff raised UnicodeDecodeError from ctx.cache_path,
    sale.cache_info and sale.calibrate. It is now os.fsdecode's str (the one
    os.fsencode turns back into those bytes)."""
    raw = os.fsencode(str(tmp_path)) + b"/c\xff\xfe.db"
    with sale.Context(cache=raw) as ctx:
        assert os.fsencode(ctx.cache_path) == raw
        assert sale.cache_info(ctx)["path"] == ctx.cache_path


def _calib_dir(path, heads=2, n=256):
    g = torch.Generator().manual_seed(0)
    path.mkdir()
    sale.write_safetensors(path / "layer_000.safetensors",
                           {name: torch.randn(1, heads, n, 64, generator=g) for name in ("q", "k", "v")})
    return sale.read_safetensors(path / "layer_000.safetensors")


def test_calibrate_is_seen_by_the_context_that_ran_it(tmp_path):
    """A context reads a (model, layer)'s thresholds once and keeps them; sale.calibrate
    stores through the `sale calibrate` command, another process, so its own context
    went on serving the thresholds of the calibration before: recalibrated with
    thr="fixed", a call with thr="run" was accepted (a fresh context refuses it) and
    recalibrated taus were silently the old ones."""
    has_thresholds()
    t = _calib_dir(tmp_path / "cal")
    q, k, v = t["q"], t["k"], t["v"]
    with sale.Context(cache=str(tmp_path / "c.db")) as ctx, pytest.warns(UserWarning, match="one sample"):
        sale.calibrate(str(tmp_path / "cal"), model="m", device="cpu", thr="run", context=ctx)
        sale.reference_attention(q, k, v, tau=("m", 0), thr="run", context=ctx)  # read, and kept
        sale.calibrate(str(tmp_path / "cal"), model="m", device="cpu", thr="fixed", context=ctx)
        raises(r"calibrated with thr=fixed", sale.reference_attention, q, k, v, tau=("m", 0), thr="run", context=ctx)


def test_calibrate_checks_the_rest_of_its_arguments(tmp_path):
    """budget "abc", -1, nan or True, budget_abs "x" and extra_args [1] reached the
    command (a SaleError from its usage text, or a TypeError from subprocess), and a
    context on ':memory:' ran the command on its own in-memory cache: nothing stored
    anywhere, no error. Each is now sale.InvalidArgument naming the argument, before
    anything runs."""
    d = str(tmp_path)
    for bad in ("abc", -1, 0, float("nan"), float("inf"), True):
        raises(r"budget: a finite number > 0", sale.calibrate, d, model="m", budget=bad)
    raises(r"budget_abs: a finite number > 0", sale.calibrate, d, model="m", budget_abs="x")
    raises(r"extra_args: a list of command arguments", sale.calibrate, d, model="m", extra_args=[1])
    raises(r"dense_above: a fraction", sale.calibrate, d, model="m", dense_above=True)
    if _lib.cli_path() is None:
        pytest.skip("the sale command is not built")
    with sale.Context(cache=":memory:") as ctx:
        raises(r"context: its cache is in memory", sale.calibrate, d, model="m", device="cpu", context=ctx)


def test_read_safetensors_checks_shapes_against_the_data(tmp_path):
    """A shape with -1 ([-1], [2, -1]) was inferred by reshape and the file read as
    if valid; a shape of [True] was taken as [1]. A shape is now a list of ints >= 0
    whose bytes are exactly the tensor's data_offsets."""
    import json
    import struct

    def write(name, shape, nbytes=8):
        h = json.dumps({"q": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}).encode()
        p = tmp_path / name
        p.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * nbytes)
        return str(p)

    assert sale.read_safetensors(write("ok", [2, 1]))["q"].shape == (2, 1)
    assert sale.read_safetensors(write("empty", [0, 3], 0))["q"].shape == (0, 3)
    for i, shape in enumerate(([-1], [2, -1], [True, 2], [2.0], None)):
        with pytest.raises(sale.InvalidArgument, match="not a safetensors file"):
            sale.read_safetensors(write("bad%d" % i, shape, 8 if i != 1 else 16))


def test_write_safetensors_odd_inputs(tmp_path):
    """A list of pairs raised AttributeError ('list' has no 'items'), a meta tensor
    NotImplementedError, a tensor with the negative bit (a lazy neg view) a
    RuntimeError from .view(uint8). Now InvalidArgument, InvalidArgument, and the
    values written."""
    p = str(tmp_path / "x.safetensors")
    raises(r"tensors: a dict", sale.write_safetensors, p, [("q", torch.ones(2))])
    raises(r"q: a meta tensor", sale.write_safetensors, p, {"q": torch.ones(2, device="meta")})
    sale.write_safetensors(p, {"q": torch.ones(2)._neg_view()})
    assert torch.equal(sale.read_safetensors(p)["q"], -torch.ones(2))


def test_close_waits_for_prewarm_compiles(tmp_path):
    """prewarm compiles outside the context's lock (in parallel) with the raw handle;
    close() on another thread ran sale_destroy under them (a use after free: the
    library says sale_destroy is concurrent with nothing). close now waits for them."""
    ctx = sale.Context(cache=str(tmp_path / "c.db"))
    real = ctx._lib
    started, release = threading.Event(), threading.Event()

    class Lib:
        def __getattr__(self, name):
            return getattr(real, name)

        def sale_compile(self, h, k, ki):
            started.set()
            release.wait(10)
            if ctx._h is None:  # destroyed under us: do not hand the freed handle to C
                return _lib.ERR_INVALID
            return real.sale_compile(h, k, ki)

    ctx._lib = Lib()
    failed = []
    t = threading.Thread(target=lambda: failed.append(
        sale.prewarm(["dense:d=64,dt=bf16,arch=sm_80"], context=ctx, jobs=1)))
    t.start()
    assert started.wait(10)
    closed = threading.Event()
    c = threading.Thread(target=lambda: (ctx.close(), closed.set()))
    c.start()
    try:
        assert not closed.wait(0.3), "close() destroyed the context under a prewarm compile"
        assert ctx._h is not None
    finally:
        release.set()
        t.join(60)
        c.join(10)
    assert closed.is_set() and ctx._h is None
    assert failed and failed[0][0]["key"].startswith("dense:d=64")
    raises(r"jobs: -1 is out of range", sale.prewarm, [], jobs=-1)


def test_context_argument_must_be_a_context():
    """context="x" (or a path, as sale.Context's first argument is) raised
    AttributeError: 'str' object has no attribute '_lock' from deep inside."""
    q, k, v = qkv()
    raises(r"context: expected a sale.Context", sale.reference_attention, q, k, v, context="cache.db")
    raises(r"context: expected a sale.Context", sale.cache_info, "cache.db")
    raises(r"context: expected a sale.Context", sale.format_key, "fused:d=128", context=5)


def test_tau_that_is_1_as_a_float32_is_refused_as_tau():
    """tau=1 - 1e-12 passed the [0, 1) check but is 1.0f in C: the library refused it
    as 'tau_default', a name the caller never used."""
    q, k, v = qkv()
    raises(r"tau: must be in \[0, 1\)", sale.reference_attention, q, k, v, tau=1 - 1e-12)


def test_complex_tau_is_not_served_from_the_plan_of_floats():
    """The plan key compared per-head values by ==, and 0.01+0j == 0.01: a complex tau
    list (or tensor) was refused alone but served from the plan of the real values."""
    q, k, v = qkv()
    for _ in range(2):
        raises(r"tau: expected a float", sale.reference_attention, q, k, v, tau=[0.01 + 0j] * 4)
        raises(r"tau: expected a float", sale.reference_attention, q, k, v,
               tau=torch.full((4,), 0.01, dtype=torch.complex64))
        sale.reference_attention(q, k, v, tau=[0.01] * 4)
        sale.reference_attention(q, k, v, tau=torch.full((4,), 0.01))


def test_hf_configure_tau_takes_what_attention_takes(hf_settings):
    """configure(tau=np.float32(0.01)) was refused though sale.attention takes numpy
    floats; a per-head list took bools ([False, True]) and 1 - 1e-12 (1.0f), which
    failed only at the first prefill."""
    np = pytest.importorskip("numpy")
    hf = hf_settings
    assert hf.configure(tau=np.float32(0.01))["tau"] == np.float32(0.01)
    assert hf.configure(tau=[np.float64(0.01), 0.02])["tau"] == [0.01, 0.02]
    for bad in ([False, True], [0.01, 1 - 1e-12], 1 - 1e-12, True, [float("nan")]):
        raises(r"tau: a float in \[0, 1\)", hf.configure, tau=bad)


def test_tune_on_miss_tau_shape_and_heads_are_checked(tmp_path):
    """Left by the Python audit: Context(tune_on_miss="no") was true (any
    truthy value), a 2-D tau tensor was flattened into per-head values (also
    through a plan cached for the 1-D tensor of the same values), and
    thresholds(heads=2**31-1) asked for an 8 GB buffer before C was called.
    Each is an InvalidArgument naming the argument."""
    import pytest
    import torch
    import sale
    for bad in ("no", 2, None, 0.5):
        with pytest.raises(sale.InvalidArgument, match="tune_on_miss"):
            sale.Context(cache=str(tmp_path / "a.db"), tune_on_miss=bad)
    ctx = sale.Context(cache=str(tmp_path / "b.db"), tune_on_miss=False)
    with pytest.raises(sale.InvalidArgument, match="heads"):
        sale.thresholds("m", 0, 2 ** 31 - 1, context=ctx)
    q = torch.randn(1, 4, 64, 64, dtype=torch.bfloat16)
    k = torch.randn(1, 2, 64, 64, dtype=torch.bfloat16)
    v = torch.randn(1, 2, 64, 64, dtype=torch.bfloat16)
    with pytest.raises(sale.InvalidArgument, match="one dimension"):
        sale.reference_attention(q, k, v, tau=torch.full((2, 2), 0.004), context=ctx)
    ctx.close()
