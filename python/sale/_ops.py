# _ops.py — sale under torch.compile: one custom op, torch.ops.sale.attention,
# that sale.attention, sale.reference_attention and the transformers
# integration call while torch.compile traces them (torch.compiler.is_compiling()),
# so a compiled model holds sale's attention as one node of its graph
# (fullgraph=True works) instead of breaking the graph at every layer (the
# ctypes calls cannot be traced). Eager calls do not go through it.
#
# The op returns a new tensor: out= is not taken (a mutated argument would
# need its own schema), nor return_mask / return_lse / return_stats or a
# Context; calls that pass them are traced as before (a graph break there).
# Neither is a per-head tau given as a tensor (its values would be read while
# tracing); a list or tuple of floats is.
import numbers
from typing import List, Optional

import torch

from . import _core

_TILE_ARGS = ("tile_warps", "tile_stages")
_GEOMETRY = ("block_q", "block_k", "block_seg", "local_window", "est_bits", "dense_below")


@torch.library.custom_op("sale::attention", mutates_args=())
def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: List[float], model: Optional[str],
                 layer: int, mode: str, layout: str, scale: Optional[float], out_layout: str, reference: bool,
                 block_q: Optional[int], block_k: Optional[int], block_seg: Optional[int],
                 local_window: Optional[int], est_bits: Optional[int], dense_below: Optional[int],
                 tile_warps: Optional[int], tile_stages: Optional[int], thr: Optional[str]) -> torch.Tensor:
    """sale.attention (reference False: CUDA tensors) or sale.reference_attention
    (True: CPU tensors) into a new tensor: q's shape when out_layout is layout,
    else q's shape with dimensions 1 and 2 swapped (bnhd: [B, N, H, D], what
    transformers wants back). tau: one value for every head, or one a head;
    model: thresholds stored for (model, layer) instead of tau."""
    t = (model, layer) if model is not None else (tau[0] if len(tau) == 1 else list(tau))
    out = q.new_empty(_out_shape(q, layout, out_layout))  # refuses what the fake refuses
    view = out if out_layout == layout else out.transpose(1, 2)
    kw = dict(tau=t, mode=mode, layout=layout, scale=scale, out=view, block_q=block_q, block_k=block_k,
              block_seg=block_seg, local_window=local_window, est_bits=est_bits, dense_below=dense_below, thr=thr)
    if reference:
        if tile_warps is not None or tile_stages is not None:
            raise _core.InvalidArgument("sale.reference_attention: tile_warps / tile_stages are a GPU kernel's")
        _core.reference_attention(q, k, v, **kw)
    else:
        _core.attention(q, k, v, tile_warps=tile_warps, tile_stages=tile_stages, **kw)
    return out


def _out_shape(q, layout, out_layout):
    if q.dim() != 4 or layout not in ("bhnd", "bnhd") or out_layout not in ("bhnd", "bnhd"):
        raise _core.InvalidArgument("sale::attention: q must be 4-D and layout / out_layout 'bhnd' or 'bnhd' "
                                    "(got q of %d dimensions, %r, %r)" % (q.dim(), layout, out_layout))
    s = list(q.shape)
    if out_layout != layout:
        s[1], s[2] = s[2], s[1]
    return s


@attention_op.register_fake
def _attention_fake(q, k, v, tau, model, layer, mode, layout, scale, out_layout, reference, block_q, block_k,
                    block_seg, local_window, est_bits, dense_below, tile_warps, tile_stages, thr):
    return q.new_empty(_out_shape(q, layout, out_layout))


# compiling(): True while torch.compile (dynamo) traces the caller. Looked up
# once: every eager sale.attention call asks it (~0.1 us)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
compiling = _is_compiling if callable(_is_compiling) else (lambda: False)


def _num(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _stored(tau):
    """tau as (model, layer): the thresholds sale.calibrate stored."""
    return isinstance(tau, tuple) and len(tau) == 2 and isinstance(tau[0], str)


def _opt_ok(name, x):
    if x is None:
        return True
    if name == "thr":
        return isinstance(x, str)
    return isinstance(x, int) and not isinstance(x, bool)


def traceable(q, k, v, tau, scale, opts, out, extras, context):
    """Whether a call can go through the op: no out=, no return_*, no Context,
    tau a number, a list / tuple of numbers, or (model, layer), scale a number
    or None, the geometry and tile arguments ints or None. Anything else is
    traced as before, so that its checks (and their messages) stay the eager
    ones. An input that autograd records is refused here as on the eager path
    (sale has no backward)."""
    if out is not None or extras or context is not None:
        return False
    if not (scale is None or _num(scale)) or not all(_opt_ok(n, opts.get(n)) for n in opts):
        return False  # the eager path refuses it with its own message
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise _core.InvalidArgument("q, k, v: sale has no backward, and a tensor requires grad: the result would "
                                    "silently have none; call under torch.no_grad() or pass .detach()ed tensors")
    if _stored(tau):
        return isinstance(tau[1], int) and not isinstance(tau[1], bool)
    if isinstance(tau, (list, tuple)):
        return len(tau) > 0 and all(_num(x) for x in tau)
    return _num(tau)


def call(q, k, v, tau, mode, layout, scale, out_layout, reference, opts):
    """The op with sale.attention's arguments (opts: the geometry and tile keyword arguments)."""
    model, layer = None, 0
    if _stored(tau):
        model, layer = tau[0], int(tau[1])
        taus = [0.0]  # unused: the op reads the stored thresholds
    elif isinstance(tau, (list, tuple)):
        taus = [float(x) for x in tau]
    else:
        taus = [float(tau)]
    return torch.ops.sale.attention(q, k, v, taus, model, layer, mode, layout,
                                    None if scale is None else float(scale), out_layout, reference,
                                    *(opts.get(n) for n in _GEOMETRY), *(opts.get(n) for n in _TILE_ARGS),
                                    opts.get("thr"))
