# Capture post-RoPE Q/K/V from a tiny random Llama into per-layer safetensors
# files, check them against what the attention really computed, then calibrate
# (with `sale calibrate`, skipped visibly where this libsale lacks it).
import os
import subprocess
import warnings

import pytest
import torch
import torch.nn.functional as F

import sale

pytest.importorskip("transformers")
from tinyllama import tiny_llama  # noqa: E402

N = 2048


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    m = tiny_llama("sdpa")
    o_in = {}
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(
        lambda mod, args, i=i: o_in.setdefault(i, args[0].detach().clone())) for i, layer in
        enumerate(m.model.layers)]
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 1000, (1, N), generator=g) for _ in range(2)]
    with torch.no_grad(), sale.capture(m, str(d)) as cap:
        m(prompts[0])
        m.generate(prompts[1], max_new_tokens=2, do_sample=False)  # its decode steps are not recorded
    for h in hooks:
        h.remove()
    return d, cap, o_in, m


def test_capture_writes_one_file_per_layer(captured):
    d, cap, _, m = captured
    assert m.config._attn_implementation == "sdpa"  # restored on exit
    names = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    assert names == ["layer_000.safetensors", "layer_001.safetensors"]
    t = sale.read_safetensors(str(d / names[0]))
    assert t["q"].shape == (2, 4, N, 64) and t["k"].shape == (2, 2, N, 64) and t["v"].shape == (2, 2, N, 64)
    assert t["q"].dtype == torch.float32
    try:
        from safetensors.torch import load_file
    except ImportError:
        return
    s = load_file(str(d / names[1]))
    u = sale.read_safetensors(str(d / names[1]))
    assert all(torch.equal(s[k], u[k]) for k in "qkv")


def test_captured_qkv_are_what_the_attention_saw(captured):
    d, _, o_in, _ = captured
    t = sale.read_safetensors(str(d / "layer_001.safetensors"))
    q, k, v = t["q"][:1], t["k"][:1], t["v"][:1]  # the first prompt, the first input o_proj saw
    att = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    assert (att.transpose(1, 2).reshape(1, N, -1) - o_in[1]).abs().max().item() < 1e-5
    sale_out = sale.reference_attention(q, k, v, mode="dense")
    assert (sale_out - att).abs().max().item() < 1e-4


def test_different_lengths_are_refused(tmp_path):
    m = tiny_llama("sdpa")
    with pytest.raises(sale.InvalidArgument, match="same number of tokens"):
        with torch.no_grad(), sale.capture(m, str(tmp_path)):
            m(torch.zeros(1, 64, dtype=torch.long))
            m(torch.zeros(1, 65, dtype=torch.long))
    assert m.config._attn_implementation == "sdpa"


def has_calibrate():
    cli = sale.cli_path()
    if not cli:
        return False
    r = subprocess.run([cli, "calibrate", "--help"], capture_output=True, text=True)
    return r.returncode == 0


@pytest.mark.calibrate
def test_capture_then_calibrate_round_trip(captured):
    if not has_calibrate():
        pytest.skip("calibrate: this build's `sale` command has no `calibrate` yet (issue 8)")
    d, _, _, _ = captured
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = sale.calibrate(str(d), model="tiny-llama", budget=0.05, device="cpu")
    assert report
    assert not [w for w in seen if "one sample" in str(w.message)], "two prompts draw no warning"
    for layer in (0, 1):
        tau = sale.thresholds("tiny-llama", layer, 4)
        assert len(tau) == 4 and all(0 <= x < 1 for x in tau)


@pytest.mark.calibrate
def test_calibrating_on_one_sample_warns(tmp_path):
    """One prompt decides every tau: the command says so, and Python raises it as
    a UserWarning (a tau chosen on one prompt can miss the budget on another)."""
    if not has_calibrate():
        pytest.skip("calibrate: this build's `sale` command has no `calibrate`")
    g = torch.Generator().manual_seed(9)
    q = torch.randn(1, 2, 512, 64, generator=g).to(torch.float16)
    k = torch.randn(1, 2, 512, 64, generator=g).to(torch.float16)
    v = torch.randn(1, 2, 512, 64, generator=g).to(torch.float16)
    sale.write_safetensors(str(tmp_path / "layer_000.safetensors"), {"q": q, "k": k, "v": v})
    with pytest.warns(UserWarning, match="one sample per layer.*two or more samples"):
        sale.calibrate(str(tmp_path), model="one-prompt", budget=0.05, device="cpu", extra_args=["--dry-run"])


@pytest.mark.calibrate
def test_a_smaller_recalibration_replaces_the_model_and_warns(tmp_path):
    """A second calibration of a model over fewer layers replaces the first as a
    whole: the layer it does not cover has no thresholds afterwards (they were
    mixed before), and Python raises the command's count of dropped rows."""
    if not has_calibrate():
        pytest.skip("calibrate: this build's `sale` command has no `calibrate`")
    g = torch.Generator().manual_seed(3)
    for sub, layers in (("two", (0, 1)), ("one", (0,))):
        (tmp_path / sub).mkdir()
        for layer in layers:
            t = [torch.randn(2, 2, 256, 64, generator=g).to(torch.float16) for _ in range(3)]
            sale.write_safetensors(str(tmp_path / sub / ("layer_%03d.safetensors" % layer)),
                                   dict(zip("qkv", t)))
    ctx = sale.Context(cache=str(tmp_path / "k.db"))
    sale.calibrate(str(tmp_path / "two"), model="re", budget=0.05, device="cpu", context=ctx)
    assert len(sale.thresholds("re", 1, 2, context=ctx)) == 2
    with pytest.warns(UserWarning, match="replaced the earlier calibration of 're'.*2 of them dropped"):
        sale.calibrate(str(tmp_path / "one"), model="re", budget=0.05, device="cpu", context=ctx)
    assert len(sale.thresholds("re", 0, 2, context=ctx)) == 2
    with pytest.raises(sale.NotFound):
        sale.thresholds("re", 1, 2, context=ctx)


def test_calibrate_dense_above_is_checked_before_the_command_runs(tmp_path):
    """dense_above outside [0, 1] is refused in Python with the reason."""
    with pytest.raises(sale.InvalidArgument, match=r"dense_above: a fraction of blocks in \[0, 1\]"):
        sale.calibrate(str(tmp_path), model="x", dense_above=1.5)
