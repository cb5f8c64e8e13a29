# torch.compile: sale.attention, sale.reference_attention and
# attn_implementation="sale" trace to one node, torch.ops.sale.attention, so a
# compiled function or model holds them without a graph break (fullgraph=True).
# On the CPU (the reference); the same op runs sale.attention on CUDA tensors
# (test_gpu.py). Compiled results must equal the eager ones bit for bit: the
# op runs the same C code on the same tensors.
import pytest
import torch

import sale
from sale import hf

dynamo = pytest.importorskip("torch._dynamo")


def qkv(B=1, Hq=4, Hkv=2, N=300, D=64, dtype=torch.bfloat16, seed=0, layout="bhnd"):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda H: (B, H, N, D)) if layout == "bhnd" else (lambda H: (B, N, H, D))
    return [torch.randn(shape(H), generator=g, dtype=dtype) for H in (Hq, Hkv, Hkv)]


class Graphs:
    """A torch.compile backend that keeps each FX graph it is given and runs it as it is."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward

    def op_nodes(self):
        return sum(1 for gm in self.graphs for n in gm.graph.nodes
                   if n.op == "call_function" and "sale.attention" in str(n.target))


@pytest.fixture(autouse=True)
def fresh():
    dynamo.reset()
    saved = hf.configure()
    yield
    hf.configure(**saved)
    dynamo.reset()


@pytest.mark.parametrize("kw", [dict(tau=0.01), dict(tau=[0.01, 0.0, 0.02, 0.004]), dict(tau=(0.01, 0.0, 0.02, 0.004),
                                mode="plain"), dict(tau=0.004, mode="fused", block_q=64, block_k=16, local_window=64),
                                dict(tau=0.03, thr="fixed", scale=0.2), dict(tau=0.004, dense_below=10 ** 6)],
                         ids=["float", "per-head-list", "tuple-plain", "geometry", "fixed-scale", "dense-below"])
def test_reference_attention_is_one_graph_node_and_equals_eager(kw):
    q, k, v = qkv()
    be = Graphs()

    def f(q, k, v):
        return sale.reference_attention(q * 2.0, k, v, **kw) + 1  # torch ops on both sides of it

    got = torch.compile(f, backend=be, fullgraph=True)(q, k, v)
    assert be.op_nodes() == 1, "expected one sale.attention node in %d graphs" % len(be.graphs)
    assert torch.equal(got, f(q, k, v))


def test_bnhd_layout_and_aot_eager():
    # aot_eager runs the op's fake (meta) function and functionalization: the shapes it promises
    q, k, v = qkv(layout="bnhd", N=257, Hq=6, Hkv=3)
    f = lambda q, k, v: sale.reference_attention(q, k, v, tau=0.004, layout="bnhd")  # noqa: E731
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v)
    ref = f(q, k, v)
    assert got.shape == q.shape and got.is_contiguous() and torch.equal(got, ref)


def test_the_op_passes_torch_library_opcheck():
    q, k, v = qkv(N=130)
    args = (q, k, v, [0.01], None, 0, "auto", "bhnd", None, "bnhd", True, None, None, None, None, None, None, None,
            None, None)
    torch.library.opcheck(torch.ops.sale.attention.default, args)
    with pytest.raises(sale.InvalidArgument, match="q must be 4-D"):  # the op's own check, eager and fake alike
        torch.ops.sale.attention(q[0], *args[1:])
    with pytest.raises(sale.InvalidArgument, match="layout / out_layout"):
        torch.ops.sale.attention(*args[:9], "nhbd", *args[10:])
    out = torch.ops.sale.attention(*args)
    assert out.shape == (1, 130, 4, 64)  # out_layout bnhd: [B, N, H, D]
    assert torch.equal(out.transpose(1, 2), sale.reference_attention(q, k, v, tau=0.01))


def test_what_the_op_cannot_take_is_traced_as_before():
    # return_stats, out= and a tensor tau cannot be one node: the call runs eagerly (a graph break), with its result
    q, k, v = qkv()
    taus = torch.tensor([0.01, 0.0, 0.02, 0.004])

    def f(q, k, v, out):
        a, stats = sale.reference_attention(q, k, v, tau=0.01, return_stats=True)
        sale.reference_attention(q, k, v, tau=taus, out=out)
        return a, stats["density"]

    out = torch.empty_like(q)
    a, dens = torch.compile(f, backend="eager")(q, k, v, out)
    ref, rstats = sale.reference_attention(q, k, v, tau=0.01, return_stats=True)
    assert torch.equal(a, ref) and dens == rstats["density"]
    assert torch.equal(out, sale.reference_attention(q, k, v, tau=taus))
    dynamo.reset()  # else the frames compiled above (with their breaks) serve the call below
    with pytest.raises(Exception, match="(?i)dynamo|graph break|unsupported"):  # the graph break, under fullgraph
        torch.compile(f, backend="eager", fullgraph=True)(q, k, v, out)


def test_errors_under_compile_are_sales():
    q, k, v = qkv()
    with pytest.raises(sale.InvalidArgument, match=r"tau: must be in \[0, 1\)"):
        torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, tau=1.5), backend="eager")(q, k, v)
    with pytest.raises(sale.InvalidArgument, match="runs on CUDA tensors"):
        torch.compile(lambda q, k, v: sale.attention(q, k, v), backend="eager")(q, k, v)
    with pytest.raises(sale.InvalidArgument, match="block_q: expected an int, got True"):
        torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, block_q=True), backend="eager")(q, k, v)
    # a 0-d tensor scale is not the op's: the eager path runs it, with the same result as eagerly
    sc = torch.tensor(0.1)
    assert torch.equal(torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, scale=sc), backend="eager")(
        q, k, v), sale.reference_attention(q, k, v, scale=sc))
    qg = q.clone().requires_grad_()
    with pytest.raises(sale.InvalidArgument, match="sale has no backward"):
        torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, tau=0.01), backend="eager")(qg, k, v)
    with torch.no_grad():  # the same call without autograd recording it: fine
        assert torch.equal(torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, tau=0.01),
                                         backend="eager", fullgraph=True)(qg, k, v),
                           sale.reference_attention(q, k, v, tau=0.01))


def test_a_compiled_model_holds_sale_in_every_layer(monkeypatch):
    pytest.importorskip("transformers")
    from tinyllama import tiny_llama
    hf.configure(cpu="reference", min_len=0, tau=0.004)
    m = tiny_llama("sale", layers=3)
    x = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(2))
    be = Graphs()
    with torch.no_grad():
        eager = m(x).logits
        dynamo.reset()
        compiled = torch.compile(m, backend=be, fullgraph=True)
        got = compiled(x).logits
    assert be.op_nodes() == 3, "one sale.attention node a layer, got %d" % be.op_nodes()
    assert torch.equal(got, eager)
    # what the node runs: the C reference, once a layer a forward, with the configured tau
    calls = []
    real = sale._core.reference_attention

    def spy(q, k, v, **kw):
        calls.append((tuple(q.shape), kw["tau"], tuple(kw["out"].shape)))
        return real(q, k, v, **kw)

    monkeypatch.setattr(sale._core, "reference_attention", spy)
    with torch.no_grad():
        again = compiled(x).logits
    assert torch.equal(again, eager)
    assert calls == [((1, 4, 300, 64), 0.004, (1, 4, 300, 64))] * 3, calls


def test_sale_imported_before_torch_still_compiles_to_one_node():
    # the op is registered when torch is first set up (sale imports without torch); a process that imports sale
    # first and compiles before any eager call must still get the node (fullgraph), in a fresh interpreter
    import os
    import subprocess
    import sys
    code = """
import sys
import sale
assert "torch" not in sys.modules, "import sale imported torch"
import torch
gs = []
def be(gm, ex):
    gs.append(gm)
    return gm.forward
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, h, 256, 64, generator=g, dtype=torch.bfloat16) for h in (4, 2, 2))
out = torch.compile(lambda q, k, v: sale.reference_attention(q, k, v, tau=0.01) + 1, backend=be, fullgraph=True)(q, k, v)
nodes = [str(n.target) for gm in gs for n in gm.graph.nodes if n.op == "call_function"]
assert nodes.count("sale.attention") == 1, nodes
assert torch.equal(out, sale.reference_attention(q, k, v, tau=0.01) + 1)
print("ok")
"""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(sale.__file__)))
    env = dict(os.environ, PYTHONPATH=pkg + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]


def test_a_compiled_model_holds_sale_where_transformers_builds_a_mask_while_tracing(monkeypatch):
    # transformers up to 5.x (5.17 checked; an H200 run found it) never skips the causal mask while tracing:
    # SDPA's mask function then hands every layer a full [B, 1, N, N] mask under torch.compile, and a layer with
    # a mask falls back to SDPA. Emulated here by that version's answer (never skip); sale's own mask function
    # must still give no mask for plain causal prefill. Control: with SDPA's mask function registered instead,
    # the same compiled model holds no sale node.
    pytest.importorskip("transformers")
    import transformers.masking_utils as mu
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from tinyllama import tiny_llama
    monkeypatch.setattr(mu, "_ignore_causal_mask_sdpa", lambda *a, **k: False)
    hf.configure(cpu="reference", min_len=0, tau=0.004)
    m = tiny_llama("sale", layers=3)
    x = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(2))
    try:
        for fn, want in ((hf.sale_mask, 3), (sdpa_mask, 0)):
            AttentionMaskInterface.register("sale", fn)
            be = Graphs()
            with torch.no_grad():
                eager = m(x).logits
                dynamo.reset()
                got = torch.compile(m, backend=be, fullgraph=True)(x).logits
            assert be.op_nodes() == want, (fn.__name__, be.op_nodes())
            assert torch.equal(got, eager)
    finally:
        AttentionMaskInterface.register("sale", hf.sale_mask)


def test_sale_mask_gives_no_mask_only_for_plain_causal_prefill():
    pytest.importorskip("transformers")
    from transformers.masking_utils import causal_mask_function, sdpa_mask, sliding_window_causal_mask_function
    base = dict(batch_size=2, q_length=16, kv_length=16, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
                attention_mask=None, allow_is_causal_skip=True, device="cpu")
    assert hf.sale_mask(**base) is None
    pad = torch.ones(2, 16, dtype=torch.bool)
    pad[1, :3] = False  # left padding in the second sequence
    causal = torch.tril(torch.ones(16, 16, dtype=torch.bool))
    for change in (dict(attention_mask=pad), dict(allow_is_causal_skip=False), dict(kv_length=24, q_length=8),
                   dict(q_offset=8, kv_offset=0, kv_length=24, q_length=16), dict(local_size=4),
                   dict(mask_function=sliding_window_causal_mask_function(4))):
        kw = dict(base, **change)
        got, sdpa = hf.sale_mask(**kw), sdpa_mask(**kw)  # anything but plain causal prefill: SDPA's answer
        assert (got is None) == (sdpa is None) and (got is None or torch.equal(got, sdpa)), change
        if "attention_mask" in change:
            assert torch.equal(got[0, 0], causal) and not got[1, 0, :, :3].any(), change
    # under tracing (transformers <= 5.17 never skips then; emulated) SDPA's answer is a mask, sale's still none
    import transformers.masking_utils as mu
    real = mu._ignore_causal_mask_sdpa
    try:
        mu._ignore_causal_mask_sdpa = lambda *a, **k: False
        assert sdpa_mask(**base) is not None and hf.sale_mask(**base) is None
    finally:
        mu._ignore_causal_mask_sdpa = real
