# hf.py — Hugging Face transformers integration: attn_implementation="sale"
# runs causal prefill through sale.attention; decode steps, padded batches,
# CPU tensors and anything sale does not cover go to transformers' own SDPA.
import sys
import threading

from . import _core

NAME = "sale"
_settings = {"model": None, "tau": 0.004, "mode": "auto", "min_len": 1024, "cpu": "sdpa", "dense_below": None}
_registered = False
_reg_lock = threading.Lock()


def configure(**kw):
    """Settings of attn_implementation="sale": model (thresholds stored for this model
    name are used per layer; None: the config attribute `sale_model`, else tau),
    tau (one float for every head), mode, min_len (shorter prefills use SDPA),
    cpu ("sdpa": CPU tensors use SDPA; "reference": the C reference, for checks),
    dense_below (passed to sale). Returns the settings."""
    for k, v in kw.items():
        if k not in _settings:
            raise _core.InvalidArgument("sale.hf.configure: unknown setting %r (known: %s)" %
                                        (k, ", ".join(sorted(_settings))))
        why = _CHECKS[k](v)  # refused here, not silently (cpu="refrence" would be SDPA) or at the first prefill
        if why:
            raise _core.InvalidArgument("sale.hf.configure: %s: %s, got %r" % (k, why, v))
    _settings.update(kw)
    return dict(_settings)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and -2 ** 31 <= v < 2 ** 31


_CHECKS = {
    "model": lambda v: None if v is None or (isinstance(v, str) and "\0" not in v) else "a model name (str) or None",
    "tau": lambda v: None if _core._tau_ok(v) or (isinstance(v, (list, tuple)) and v and all(_core._tau_ok(x) for x in v))
    else "a float in [0, 1) or a per-head list of them",
    "mode": lambda v: None if isinstance(v, str) and v in _core._MODES else "one of %s" % ", ".join(_core._MODES),
    "min_len": lambda v: None if _is_int(v) and v >= 0 else "an int >= 0",
    "cpu": lambda v: None if v in ("sdpa", "reference") else "'sdpa' or 'reference'",
    "dense_below": lambda v: None if v is None or _is_int(v) else "an int or None",
}


_grad_told = False


def _needs_grad(torch, query, key, value):
    """True when autograd records this forward: sale has no backward, so SDPA runs it (said once, as a warning:
    a forward without torch.no_grad() would otherwise lose sale's speed unseen)."""
    global _grad_told
    if not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)):
        return False
    if not _grad_told:
        _grad_told = True
        _core._log.warning("sale: q/k/v require grad (a forward outside torch.no_grad()); sale has no backward, so "
                           "SDPA runs these forwards. Use torch.no_grad() or torch.inference_mode() for sale.")
    return True


_told = set()


def _unsupported(torch, module, query, D, on_cpu):
    """True for a causal prefill that sale cannot run although the model asked for it (head_dim, a sliding
    window, a float32 model on the GPU): SDPA runs it, and the first such layer says why, once
    a reason (a model loaded with attn_implementation="sale" would otherwise lose sale's speed unseen). Nothing
    is logged while torch.compile traces (a logging call there would break the graph)."""
    if D not in (64, 128):
        what, why = "head_dim %d" % D, "sale compiles head_dim 64 and 128"
    elif getattr(module, "sliding_window", None):
        what, why = "a sliding window of %s keys" % module.sliding_window, "sale computes full causal attention"
    elif not on_cpu and query.dtype not in (torch.float16, torch.bfloat16):
        what = "%s q/k/v" % str(query.dtype).replace("torch.", "")
        why = "sale runs float16 and bfloat16; load the model with dtype=torch.bfloat16"
    else:
        return False
    tracing = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if what not in _told and not (callable(tracing) and tracing()):
        _told.add(what)
        _core._log.warning("sale: %s (%s): SDPA runs these layers (attn_implementation=\"sale\" falls back; "
                           "said once)", what, why)
    return True


def use_thresholds(model_name):
    """Use the thresholds stored by sale.calibrate for `model_name` in every layer."""
    configure(model=model_name)


def _sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def sale_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """An AttentionInterface function: query [B, Hq, Nq, D], key/value [B, Hkv, Nk, D]
    after RoPE; returns ([B, Nq, Hq, D], None) like transformers' sdpa."""
    # gpt-oss passes its learned per-head sink logits as s_aux=self.sinks (transformers 5.x,
    # models/gpt_oss/modeling_gpt_oss.py, GptOssAttention.forward); neither sale nor
    # transformers' sdpa_attention_forward (which takes and drops any **kwargs) adds them to the
    # softmax denominator, so every path here would return a wrong result without a word.
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise _core.InvalidArgument("sale: this model passes attention sinks (s_aux), which neither sale nor SDPA "
                                    "computes; use attn_implementation=\"eager\" (or a kernel that supports "
                                    "sinks) for it")
    # Gemma 2 caps its attention logits (softcap); transformers' SDPA refuses that from 5.2x on and dropped it
    # without a word before (5.17), so a fallback would be a wrong result there: refused on every path
    if kwargs.get("softcap"):
        raise _core.InvalidArgument("sale: this model caps its attention logits (softcap=%s), which neither sale nor "
                                    "SDPA computes; use attn_implementation=\"eager\" for it" % kwargs.get("softcap"))
    B, Hq, Nq, D = query.shape
    Nk = key.shape[2]
    s = _settings
    on_cpu = query.device.type == "cpu"
    torch = _core._t()
    causal = kwargs.get("is_causal")  # a call's is_causal wins over the module's, as in transformers' sdpa
    if causal is None:
        causal = getattr(module, "is_causal", True)
    if (attention_mask is not None or Nq != Nk or Nq < s["min_len"] or dropout or not causal
            or kwargs.get("output_attentions") or kwargs.get("position_bias") is not None
            or (on_cpu and s["cpu"] != "reference") or _unsupported(torch, module, query, D, on_cpu)
            or _needs_grad(torch, query, key, value)):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    model = s["model"] or getattr(getattr(module, "config", None), "sale_model", None)
    if model is not None and not isinstance(model, str):
        raise _core.InvalidArgument("sale: config.sale_model: expected a model name (str), got %r" % (model,))
    layer = getattr(module, "layer_idx", None)
    tau = (model, layer) if model and layer is not None else s["tau"]
    ops = _core._ops
    o = {"dense_below": s["dense_below"]}
    if ops is not None and ops.compiling() and ops.traceable(query, key, value, tau, scaling, o, None, False, None):
        # under torch.compile: one node of the graph (torch.ops.sale.attention), [B, N, Hq, D] as transformers wants
        return ops.call(query, key, value, tau, s["mode"], "bhnd", scaling, "bnhd", on_cpu, o), None
    out = torch.empty((B, Nq, Hq, D), dtype=query.dtype, device=query.device)
    ot = out.transpose(1, 2)  # [B, Hq, N, D] view of the [B, N, Hq, D] buffer transformers wants
    fn = _core.reference_attention if on_cpu else _core.attention
    fn(query, key, value, tau=tau, mode=s["mode"], scale=scaling, out=ot, dense_below=s["dense_below"])
    return out, None


def sale_mask(*args, **kwargs):
    """The mask function registered for "sale": None (causal, no mask tensor) for a plain
    causal prefill, SDPA's mask otherwise.

    transformers' sdpa_mask gives None for that case only when it is not tracing: under
    torch.compile or CUDA-graph capture, transformers up to 5.x (5.17 checked) materializes a
    full causal [B, 1, N, N] mask, and a layer handed a mask falls back to SDPA, so a compiled
    model would run without sale and say nothing. The test here reads no tensor value: no
    padding mask at all, the plain causal mask function, no local window, no chunk, queries
    and keys of one length from position 0. Anything else goes to sdpa_mask as it was."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask
    g = kwargs.get
    q, kv, qo, ko = g("q_length"), g("kv_length"), g("q_offset", 0), g("kv_offset", 0)
    if (not args and g("allow_is_causal_skip", True) and g("attention_mask") is None and g("local_size") is None
            and g("mask_function", causal_mask_function) is causal_mask_function
            and all(isinstance(x, int) for x in (q, kv, qo, ko)) and q == kv and qo == 0 and ko == 0):
        return None
    return sdpa_mask(*args, **kwargs)


def register():
    """Register "sale" with transformers' AttentionInterface (and its mask function,
    sale_mask: None for plain causal prefill, also under torch.compile). Idempotent."""
    global _registered
    with _reg_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
        _core._t()  # torch is imported: torch.ops.sale.attention now, not while torch.compile traces a forward
        AttentionInterface.register(NAME, sale_attention_forward)
        AttentionMaskInterface.register(NAME, sale_mask)
        _registered = True


class _Hook:
    """Registers "sale" right after transformers.modeling_utils is imported, so that
    `import sale` before or after transformers both make attn_implementation="sale" work."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers.modeling_utils":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                register()
            except Exception:  # a transformers too old for the registry: sale.hf.register() will say why
                pass

        spec.loader.exec_module = exec_module
        return spec


def install_hook():
    if "transformers.modeling_utils" in sys.modules:
        try:
            register()
        except Exception:
            pass
    elif not any(isinstance(h, _Hook) for h in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
