# attn_implementation="sale" in transformers: registered on import, falls back
# to SDPA where sale does not apply, and (with cpu="reference") runs the whole
# model through the C reference on the CPU with the logits of SDPA.
import pytest
import torch

import sale
from sale import hf

transformers = pytest.importorskip("transformers")
from tinyllama import tiny_llama  # noqa: E402


@pytest.fixture(autouse=True)
def settings():
    saved = hf.configure()
    yield
    hf.configure(**saved)


def ids(n, b=1, seed=1):
    return torch.randint(0, 1000, (b, n), generator=torch.Generator().manual_seed(seed))


def test_sale_is_registered():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    assert AttentionInterface._global_mapping["sale"] is hf.sale_attention_forward
    assert "sale" in AttentionMaskInterface._global_mapping


def test_cpu_falls_back_to_sdpa_exactly():
    x = ids(64)
    with torch.no_grad():
        a = tiny_llama("sdpa")(x).logits
        b = tiny_llama("sale")(x).logits
    assert torch.equal(a, b)


def test_reference_path_matches_sdpa_logits(monkeypatch):
    calls = []
    real = sale._core.reference_attention

    def spy(q, k, v, **kw):
        calls.append((tuple(q.shape), kw["tau"]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(sale._core, "reference_attention", spy)
    hf.configure(cpu="reference", min_len=0, tau=1e-6, dense_below=-1)
    x = ids(200)
    with torch.no_grad():
        a = tiny_llama("sdpa")(x).logits
        b = tiny_llama("sale")(x).logits
    assert len(calls) == 2 and calls[0][0] == (1, 4, 200, 64)
    assert (a - b).abs().max().item() < 1e-4


def test_thresholds_by_layer_and_decode_falls_back(monkeypatch):
    seen = []
    monkeypatch.setattr(sale._core, "reference_attention",
                        lambda q, k, v, **kw: (seen.append(kw["tau"]), torch.zeros_like(q))[1])
    hf.configure(cpu="reference", min_len=0)
    sale.use_thresholds("tiny-llama")
    m = tiny_llama("sale")
    with torch.no_grad():
        out = m.generate(ids(16), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 19)
    assert seen == [("tiny-llama", 0), ("tiny-llama", 1)]  # the prefill only; decode steps went to SDPA


def test_padding_mask_falls_back(monkeypatch):
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("sale called with padding"))
    hf.configure(cpu="reference", min_len=0)
    x = ids(32, b=2)
    mask = torch.ones_like(x)
    mask[1, :5] = 0
    with torch.no_grad():
        a = tiny_llama("sdpa")(x, attention_mask=mask).logits
        b = tiny_llama("sale")(x, attention_mask=mask).logits
    assert torch.equal(a, b)


def test_a_calls_is_causal_false_is_not_computed_causal(monkeypatch):
    """transformers' sdpa takes is_causal from the call's kwargs before the module's
    attribute; sale read only the module's, so a call with is_causal=False (a module
    whose attribute says causal, or has none) ran causal prefill: a silently wrong
    result. Such a call now goes to SDPA, as does a module with is_causal False."""
    import types
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("non-causal call ran sale"))
    hf.configure(cpu="reference", min_len=0)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 64, generator=g) for _ in range(3))
    module = types.SimpleNamespace(layer_idx=0, is_causal=True, training=False, num_key_value_groups=1)
    out, _ = hf.sale_attention_forward(module, q, k, v, None, scaling=0.125, is_causal=False)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False, scale=0.125)
    torch.testing.assert_close(out, want.transpose(1, 2))


def _qkv(nq, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 2, nq, 64, generator=g), torch.randn(1, 2, nk, 64, generator=g),
            torch.randn(1, 2, nk, 64, generator=g))


def _module():
    import types
    return types.SimpleNamespace(layer_idx=0, is_causal=True, training=False, num_key_value_groups=1)


@pytest.mark.parametrize("cpu,nq,name", [("reference", 64, "s_aux"), ("sdpa", 64, "s_aux"), ("reference", 1, "s_aux"),
                                         ("reference", 64, "sinks")],
                         ids=["prefill-sale", "prefill-cpu-sdpa", "decode", "named-sinks"])
def test_attention_sinks_are_refused_not_ignored(monkeypatch, cpu, nq, name):
    """gpt-oss passes its per-head sink logits as s_aux; neither sale nor transformers'
    sdpa adds them to the softmax denominator, so both returned a silently wrong result.
    Every path (sale, SDPA for decode, the CPU) now refuses them before computing."""
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("sale ran with sinks"))
    import transformers.integrations.sdpa_attention as sd
    monkeypatch.setattr(sd, "sdpa_attention_forward", lambda *a, **k: pytest.fail("SDPA ran with sinks"))
    hf.configure(cpu=cpu, min_len=0)
    q, k, v = _qkv(nq, 64)
    with pytest.raises(sale.InvalidArgument, match="attention sinks.*eager"):
        hf.sale_attention_forward(_module(), q, k, v, None, scaling=0.125, **{name: torch.zeros(2)})


@pytest.mark.parametrize("nq", [64, 1], ids=["prefill", "decode"])
def test_no_sinks_is_unchanged(nq):
    hf.configure(cpu="reference", min_len=0, tau=1e-6, dense_below=-1)
    q, k, v = _qkv(nq, 64)
    a, _ = hf.sale_attention_forward(_module(), q, k, v, None, scaling=0.125)
    b, _ = hf.sale_attention_forward(_module(), q, k, v, None, scaling=0.125, s_aux=None)
    assert torch.equal(a, b)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=nq > 1, scale=0.125)
    torch.testing.assert_close(b, want.transpose(1, 2), atol=1e-4, rtol=1e-4)


def test_a_layer_sale_cannot_run_says_why_once(caplog, monkeypatch):
    # a model asked for sale but has a head_dim sale does not compile: SDPA runs it (the same logits), and the
    # first layer says so, once for the whole model and every later forward; nothing while torch.compile traces
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("sale ran head_dim 32"))
    monkeypatch.setattr(hf, "_told", set())
    hf.configure(cpu="reference", min_len=0)
    x = ids(40)
    with torch.no_grad(), caplog.at_level("WARNING", logger="sale"):
        a = tiny_llama("sdpa", heads=8, kv_heads=2)(x).logits  # hidden 256 / 8 heads: head_dim 32
        m = tiny_llama("sale", heads=8, kv_heads=2)
        b = m(x).logits
        m(x)
    assert torch.equal(a, b)
    said = [r.getMessage() for r in caplog.records if r.name == "sale"]
    assert len(said) == 1 and "head_dim 32" in said[0] and "SDPA runs" in said[0], said
    # another reason is told once too: a sliding window (with SDPA's result)
    q, k, v = _qkv(64, 64)
    import types
    sw = types.SimpleNamespace(layer_idx=0, is_causal=True, training=False, num_key_value_groups=1, sliding_window=16)
    caplog.clear()
    with caplog.at_level("WARNING", logger="sale"):
        for _ in range(2):
            out, _ = hf.sale_attention_forward(sw, q, k, v, None, scaling=0.125)
    said = [r.getMessage() for r in caplog.records if r.name == "sale"]
    assert len(said) == 1 and "sliding window of 16" in said[0], said
    # under torch.compile (fullgraph): no log call in the graph, the same fallback
    dynamo = pytest.importorskip("torch._dynamo")
    monkeypatch.setattr(hf, "_told", set())
    caplog.clear()
    with torch.no_grad(), caplog.at_level("WARNING", logger="sale"):
        dynamo.reset()
        c = torch.compile(m, backend="eager", fullgraph=True)(x).logits
        dynamo.reset()
    assert torch.equal(c, a)
    assert not [r for r in caplog.records if r.name == "sale"]


@pytest.mark.parametrize("cpu,nq", [("reference", 64), ("sdpa", 64), ("reference", 1)],
                         ids=["prefill-sale", "prefill-cpu-sdpa", "decode"])
def test_logit_softcapping_is_refused_not_ignored(monkeypatch, cpu, nq):
    """Gemma 2 passes softcap; transformers 5.17's SDPA dropped it (a wrong result, silently), later releases refuse
    it. sale refuses it on every path before computing, naming the way out."""
    monkeypatch.setattr(sale._core, "reference_attention", lambda *a, **k: pytest.fail("sale ran with softcap"))
    import transformers.integrations.sdpa_attention as sd
    monkeypatch.setattr(sd, "sdpa_attention_forward", lambda *a, **k: pytest.fail("SDPA ran with softcap"))
    hf.configure(cpu=cpu, min_len=0)
    q, k, v = _qkv(nq, 64)
    with pytest.raises(sale.InvalidArgument, match="softcap=50.*eager"):
        hf.sale_attention_forward(_module(), q, k, v, None, scaling=0.125, softcap=50.0)
