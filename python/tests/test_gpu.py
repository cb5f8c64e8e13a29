# GPU tests of the Python package (the device machine): sale.attention against
# SDPA and against the C reference, layouts, streams, and an 8B-shaped Llama at
# 32K tokens through attn_implementation="sale". They skip, visibly, without a
# CUDA device. Runnable with pytest or without it: python3 python/tests/run_gpu.py
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
try:  # an installed sale (the wheel) wins; else the checkout's python/
    import sale
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import sale

try:
    import pytest
    gpu = pytest.mark.gpu
    skip = pytest.skip
except ImportError:  # run_gpu.py
    def gpu(f):
        return f

    class Skipped(Exception):
        pass

    def skip(reason):
        raise Skipped(reason)

LONG_N = int(os.environ.get("SALE_PY_LONG_N", "32768"))


def qkv(B=1, Hq=8, Hkv=2, N=4096, D=128, dtype=torch.bfloat16, seed=0, layout="bhnd"):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (lambda H: (B, H, N, D)) if layout == "bhnd" else (lambda H: (B, N, H, D))
    return [torch.randn(shape(H), generator=g, device="cuda", dtype=dtype) for H in (Hq, Hkv, Hkv)]


def sdpa(q, k, v):
    r = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), is_causal=True)


@gpu
def test_dense_heads_match_sdpa():
    for D in (64, 128):
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v = qkv(D=D, dtype=dtype)
            ref = sdpa(q, k, v).float()
            for mode in ("fused", "two_pass", "dense", "plain"):
                out = sale.attention(q, k, v, tau=1e-6, mode=mode)
                err = (out.float() - ref).abs().max().item()
                assert err < 3e-2, "D=%d %s %s: max |err| %.3g against SDPA" % (D, dtype, mode, err)


@gpu
def test_sparse_matches_the_reference():
    q, k, v = qkv(N=2048, Hq=4, Hkv=1, seed=3)
    # None is the device's default variant (fixed on sm_90) but the
    # reference's run: name it on both sides
    thr = "fixed" if torch.cuda.get_device_capability() == (9, 0) else "run"
    for mode in ("fused", "two_pass", "plain"):
        out, stats = sale.attention(q, k, v, tau=0.004, mode=mode, return_stats=True)
        ref, rstats = sale.reference_attention(q.cpu(), k.cpu(), v.cpu(), tau=0.004, mode=mode,
                                               return_stats=True, thr=thr)
        diff = (out.float().cpu() - ref.float()).abs().mean().item()
        assert diff < 2e-2, "%s: mean |gpu - reference| %.3g" % (mode, diff)
        assert abs(stats["density"] - rstats["density"]) < 0.02, (mode, stats["density"], rstats["density"])


@gpu
def test_layouts_strides_and_out():
    q, k, v = qkv(N=1500, Hq=8, Hkv=4)
    ref = sale.attention(q, k, v, tau=1e-6)
    qn, kn, vn = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    outn = sale.attention(qn, kn, vn, tau=1e-6, layout="bnhd")
    assert torch.equal(outn.transpose(1, 2), ref)
    buf = torch.empty(1, 1500, 8, 128, device="cuda", dtype=q.dtype)
    r = sale.attention(qn.transpose(1, 2), kn.transpose(1, 2), vn.transpose(1, 2), tau=1e-6, out=buf.transpose(1, 2))
    assert r.data_ptr() == buf.data_ptr() and torch.equal(buf.transpose(1, 2), ref)


@gpu
def test_mask_lse_stats_and_a_side_stream():
    q, k, v = qkv(N=2048)
    out, mask, lse, stats = sale.attention(q, k, v, return_mask=True, return_lse=True, return_stats=True)
    nkb = math.ceil(2048 / 32)
    assert sale.mask_to_blocks(mask, nkb).sum().item() == stats["kept_blocks"]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out2 = sale.attention(q, k, v)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out, out2)
    dense, lse_d = sale.attention(q, k, v, tau=1e-6, return_lse=True)
    sc = (q.float() @ k.float().repeat_interleave(4, 1).transpose(-1, -2)) / math.sqrt(128)
    sc = sc.masked_fill(torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device="cuda"), 1), float("-inf"))
    assert (lse_d - torch.logsumexp(sc, -1)).abs().max().item() < 1e-2


@gpu
def test_errors_on_the_gpu_path():
    q, k, v = qkv(N=256)
    for bad, match in (((q.cpu(), k, v), "runs on CUDA tensors"),
                       ((q.float(), k.float(), v.float()), "float16 or bfloat16")):
        try:
            sale.attention(*bad)
        except sale.InvalidArgument as e:
            assert match in str(e), str(e)
        else:
            raise AssertionError("no error for " + match)


@gpu
def test_torch_compile_fullgraph_equals_eager():
    # torch.ops.sale.attention on CUDA tensors: one node a call (fullgraph), the same bits as the eager call,
    # through inductor (its own kernels around sale's) and through a compiled transformers model
    import torch._dynamo as dynamo
    q, k, v = qkv(N=3000, Hq=8, Hkv=2)
    f = lambda q, k, v: sale.attention(q * 0.5, k, v, tau=0.004) * 2  # noqa: E731
    dynamo.reset()
    got = torch.compile(f, fullgraph=True)(q, k, v)
    assert torch.equal(got, f(q, k, v))
    qn, kn, vn = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    g = lambda q, k, v: sale.attention(q, k, v, tau=[0.004, 0.0] * 4, layout="bnhd", mode="fused")  # noqa: E731
    dynamo.reset()
    assert torch.equal(torch.compile(g, backend="aot_eager", fullgraph=True)(qn, kn, vn), g(qn, kn, vn))
    from tinyllama import tiny_llama
    saved = sale.hf.configure()
    try:
        sale.hf.configure(min_len=0, tau=0.004)
        m = tiny_llama("sale", layers=2, dtype=torch.bfloat16).cuda()
        x = torch.randint(0, 1000, (1, 2048), device="cuda", generator=torch.Generator(device="cuda").manual_seed(3))
        graphs = []

        def keep(gm, example_inputs):  # dynamo's FX graph run as it is: no decomposition of the model's own ops
            graphs.append(gm)
            return gm.forward
        with torch.no_grad():
            eager = m(x).logits
            dynamo.reset()
            comp = torch.compile(m, backend=keep, fullgraph=True)(x).logits
            nodes = sum(1 for gm in graphs for n in gm.graph.nodes
                        if n.op == "call_function" and "sale.attention" in str(n.target))
            assert nodes == 2, "one sale.attention node a layer, got %d" % nodes
            assert torch.equal(comp, eager)
            # aot_eager decomposes the model's own ops (RMSNorm, rotary, SiLU), which may round differently in
            # bf16, with sdpa as much as with sale: the drift of the model compiled with sale stays within twice
            # that of the same model with sdpa, plus one bf16 step. (The ~2e-3 this test first saw on the H200
            # was no rounding: the compiled model ran SDPA, not sale; the node count above catches that.)
            drift = {}
            for attn in ("sale", "sdpa"):
                mm = m if attn == "sale" else tiny_llama("sdpa", layers=2, dtype=torch.bfloat16).cuda()
                e = mm(x).logits
                dynamo.reset()
                c = torch.compile(mm, backend="aot_eager", fullgraph=True)(x).logits
                drift[attn] = (c.float() - e.float()).abs().max().item()
            assert drift["sale"] <= 2 * drift["sdpa"] + 2 ** -7, drift
    finally:
        sale.hf.configure(**saved)
        dynamo.reset()


@gpu
def test_a_transformers_model_on_the_gpu_runs_sale_or_says_why():
    # attn_implementation="sale" on the GPU: a bfloat16 model at head_dim 64 and 128 runs sale.attention in
    # every layer and logs nothing; a float32 model runs SDPA in every layer (the sdpa model's logits, bit for
    # bit) and says why once, however many forwards
    try:
        import transformers  # noqa: F401
    except ImportError:
        skip("transformers is not installed")
    import logging
    from sale import hf, _core
    from tinyllama import tiny_llama
    real, calls, said = _core.attention, [], []

    def counting(*a, **k):
        calls.append(a[0].dtype)
        return real(*a, **k)

    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())
    log, keep = logging.getLogger("sale"), Keep()
    level, saved, told = log.level, hf.configure(), set(hf._told)
    x = torch.randint(0, 1000, (1, 1024), device="cuda", generator=torch.Generator(device="cuda").manual_seed(5))
    try:
        log.addHandler(keep)
        log.setLevel(logging.WARNING)
        hf.configure(min_len=0, tau=0.004)
        hf._told.clear()
        _core.attention = counting
        with torch.no_grad():
            for hidden in (256, 512):  # 4 heads: head_dim 64, then 128
                tiny_llama("sale", hidden=hidden, dtype=torch.bfloat16).cuda()(x)
                assert calls == [torch.bfloat16] * 2, (hidden, calls)
                calls.clear()
            assert said == [], said
            a = tiny_llama("sdpa").cuda()(x).logits
            m = tiny_llama("sale").cuda()
            b = m(x).logits
            m(x)
        assert calls == [], "sale.attention ran a float32 model: %r" % calls
        assert torch.equal(a, b)
        assert len(said) == 1 and "float32 q/k/v" in said[0] and "SDPA runs" in said[0], said
    finally:
        _core.attention = real
        log.removeHandler(keep)
        log.setLevel(level)
        hf.configure(**saved)
        hf._told.clear()
        hf._told.update(told)


@gpu
def test_torch_cuda_graph_replay_equals_eager():
    # sale.attention captured into a torch.cuda.CUDAGraph (its workspace from the graph's pool, no host sync
    # with a float tau) replays to the eager bits, on new inputs copied into the captured ones; and a compiled
    # function in mode "reduce-overhead" (torch's CUDA graphs around the op) gives the same bits
    q, k, v = qkv(N=2500, Hq=8, Hkv=2, seed=7)
    eager = sale.attention(q, k, v, tau=0.004)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the capture: kernel loads, the plan's memo
        sale.attention(q, k, v, tau=0.004)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = sale.attention(q, k, v, tau=0.004)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    q2, k2, v2 = qkv(N=2500, Hq=8, Hkv=2, seed=8)
    q.copy_(q2), k.copy_(k2), v.copy_(v2)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, sale.attention(q2, k2, v2, tau=0.004))
    import torch._dynamo as dynamo
    dynamo.reset()
    f = torch.compile(lambda q, k, v: sale.attention(q, k, v, tau=0.004) + 0, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # recorded on the second call, replayed on the third
        r = f(q2, k2, v2)
    assert torch.equal(r, sale.attention(q2, k2, v2, tau=0.004))
    dynamo.reset()


@gpu
def test_random_layouts_equal_contiguous_and_touch_nothing_else():
    # test_layouts.py's cases on the GPU: views into NaN storages (contiguous, fused QKV slices, padded), either
    # layout, out= or not; the same bits as contiguous copies, no NaN read in, nothing written outside the views
    import random
    from layouts import check, draw, snapshot
    seed = int(os.environ.get("SALE_TEST_SEED", "0")) or random.randrange(1, 2 ** 31)
    for i in range(int(os.environ.get("SALE_PY_LAYOUT_CASES", "40"))):
        rng = random.Random(seed * 1000 + i)
        c = draw(rng, device="cuda", max_n=3000)
        tau = rng.choice((1e-6, 0.004, 0.03))
        mode = rng.choice(("auto", "dense", "plain", "two_pass", "fused"))
        why = "SALE_TEST_SEED=%d case %d: %s tau=%s mode=%s" % (seed, i, c["desc"], tau, mode)
        before = snapshot(c)
        got = sale.attention(c["q"], c["k"], c["v"], tau=tau, mode=mode, layout=c["layout"], out=c["out"])
        ref = sale.attention(c["q"].contiguous(), c["k"].contiguous(), c["v"].contiguous(), tau=tau, mode=mode,
                             layout=c["layout"])
        torch.cuda.synchronize()
        check(c, got, ref, before, why)


def _llama8b_shaped(attn, layers=2):
    from transformers import AutoModelForCausalLM, LlamaConfig
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                      rope_theta=500000.0, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.bfloat16)
    return m.eval()


def _prefill_ms(m, x, reps=3):
    with torch.no_grad():
        m.model(x)  # warm-up: kernel loads, allocator
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            m.model(x)
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


@gpu
def test_llama8b_shaped_32k_logits_and_prefill_time():
    try:
        import transformers  # noqa: F401
    except ImportError:
        skip("transformers is not installed")
    from sale import hf
    N = LONG_N
    x = torch.randint(0, 128256, (1, N), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    m = _llama8b_shaped("sdpa")
    with torch.no_grad():
        h_ref = m.model(x).last_hidden_state
        l_ref = m(x, logits_to_keep=256).logits.float()
    saved = hf.configure()
    try:
        hf.configure(tau=1e-6, model=None)
        m.set_attn_implementation("sale")
        with torch.no_grad():
            h = m.model(x).last_hidden_state
            lg = m(x, logits_to_keep=256).logits.float()
        rel_h = ((h.float() - h_ref.float()).norm() / h_ref.float().norm()).item()
        rel_l = ((lg - l_ref).norm() / l_ref.norm()).item()
        print("\n8B-shaped, 2 layers, %d tokens, tau 1e-6: rel. error hidden %.2e, logits %.2e" % (N, rel_h, rel_l))
        assert rel_h < 2e-2 and rel_l < 2e-2, (rel_h, rel_l)
        tau = float(os.environ.get("SALE_PY_TAU", "0.004"))
        hf.configure(tau=tau)
        t_sale = _prefill_ms(m, x)
        m.set_attn_implementation("sdpa")
        t_sdpa = _prefill_ms(m, x)
        print("prefill of %d tokens (2 layers): sdpa %.1f ms, sale tau=%g %.1f ms" % (N, t_sdpa, tau, t_sale))
    finally:
        hf.configure(**saved)


@gpu
def test_llama8b_shaped_32k_calibrated_prefill():
    """capture -> calibrate (2% budget, on the GPU) -> prefill with the stored
    per-layer thresholds, against SDPA: the logits stay close and both times
    are reported."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        skip("transformers is not installed")
    import tempfile
    from sale import hf
    N = LONG_N
    x = torch.randint(0, 128256, (1, N), device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    m = _llama8b_shaped("sdpa")
    with torch.no_grad():
        l_ref = m(x, logits_to_keep=256).logits.float()
    name = "rand-llama8b-2l-%d" % N
    with tempfile.TemporaryDirectory() as d:
        with sale.capture(m, d):
            with torch.no_grad():
                m.model(x)
        table = sale.calibrate(d, model=name, budget=0.02, device="gpu")
    print("\n" + "\n".join(table.strip().splitlines()[-6:]))
    taus = [sale.thresholds(name, layer, 32) for layer in range(2)]
    saved = hf.configure()
    try:
        hf.configure(model=name)
        m.set_attn_implementation("sale")
        with torch.no_grad():
            lg = m(x, logits_to_keep=256).logits.float()
        rel_l = ((lg - l_ref).norm() / l_ref.norm()).item()
        t_sale = _prefill_ms(m, x)
        m.set_attn_implementation("sdpa")
        t_sdpa = _prefill_ms(m, x)
        dense = sum(1 for t in taus for v in t if v <= 1e-5)
        print("calibrated (2%%, %d of %d heads dense): logits rel. error %.2e; prefill of %d tokens (2 layers): "
              "sdpa %.1f ms, sale %.1f ms" % (dense, sum(len(t) for t in taus), rel_l, N, t_sdpa, t_sale))
        # a 2% error per head in each of two layers of random weights: the H200
        # measured 6.6e-2 on the logits (1.2e-2 at tau -> 0); a wrong mapping of
        # layers or heads to thresholds gives O(1)
        assert rel_l < 0.2, rel_l
    finally:
        hf.configure(**saved)


@gpu
def test_python_overhead_is_small():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    import py_overhead
    r = py_overhead.measure(calls=300)
    print("\nsale.attention host time %.1f us/call, the C call alone %.1f us, Python overhead %.1f us"
          % (r["python_us"], r["c_us"], r["overhead_us"]))
    assert r["overhead_us"] < 100, r  # the goal is 30 us; fail only when far off
