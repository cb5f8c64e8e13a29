# _core.py — contexts, errors and the attention calls on torch tensors. Thin:
# every call checks its arguments (so the message names the tensor), fills one
# sale_attention_args and calls libsale; the algorithm lives in C.
import contextlib
import ctypes
import logging
import math
import numbers
import os
import threading
from ctypes import byref, c_char_p, c_float, c_int, c_size_t, c_void_p

from . import _lib
from ._lib import AttentionArgs, KernelInfo, Key, Stats

_log = logging.getLogger("sale")


# ----------------------------------------------------------------- errors

class SaleError(RuntimeError):
    """A failed libsale call. `.status` is the sale_status code, `.status_name` its
    name ("SALE_ERR_INVALID"), and the message is sale_last_error()."""

    status = _lib.ERR_INVALID

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def status_name(self):
        return _lib.STATUS_NAMES[self.status] if 0 <= self.status < len(_lib.STATUS_NAMES) else str(self.status)


class InvalidArgument(SaleError, ValueError):
    status = _lib.ERR_INVALID


class Unsupported(SaleError):
    status = _lib.ERR_UNSUPPORTED


class CompileError(SaleError):
    status = _lib.ERR_COMPILE


class CacheError(SaleError):
    status = _lib.ERR_CACHE


class NoDevice(SaleError):
    status = _lib.ERR_NO_DEVICE


class CudaError(SaleError):
    status = _lib.ERR_CUDA


class NotFound(SaleError, LookupError):
    status = _lib.ERR_NOT_FOUND


_BY_STATUS = {c.status: c for c in (InvalidArgument, Unsupported, CompileError, CacheError, NoDevice, CudaError,
                                    NotFound)}


def _raise(status, message):
    cls = _BY_STATUS.get(status, SaleError)
    raise cls(message, status)


def _bad(msg):
    raise InvalidArgument(msg, _lib.ERR_INVALID)


_INT_MIN, _INT_MAX = -2 ** 31, 2 ** 31 - 1


def _cint(name, v, lo=_INT_MIN):
    """v checked to be an integer (a Python or numpy int, not a bool) that a C int holds (ctypes wraps larger
    ones silently) and >= lo; returned as a Python int."""
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        _bad("%s: expected an int, got %r" % (name, v))
    v = int(v)
    if not lo <= v <= _INT_MAX:
        _bad("%s: %d is out of range [%d, %d] (a C int)" % (name, v, lo, _INT_MAX))
    return v


def _cstr(name, s):
    """s (a str) as bytes for a char * (ctypes would cut it silently at a NUL byte)."""
    if not isinstance(s, str):
        _bad("%s: expected a str, got %r" % (name, s))
    if "\0" in s:
        _bad("%s: contains a NUL byte: %r" % (name, s))
    return s.encode()


def _cpath(name, p):
    try:
        b = os.fsencode(p)
    except TypeError:
        _bad("%s: expected a path (str, bytes or os.PathLike), got %r" % (name, p))
    if b"\0" in b:
        _bad("%s: contains a NUL byte: %r" % (name, p))
    return b


# ---------------------------------------------------------------- context

def _on_log(user, level, msg):
    lv = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)[max(0, min(3, level))]
    _log.log(lv, "%s", msg.decode("utf-8", "replace") if msg else "")


_LOG_CB = _lib.LOG_FN(_on_log)


class Context:
    """One libsale context: a cache file (and optional read-only fleet file). Calls
    on one context are serialised by a lock (the context keeps the last error)."""

    def __init__(self, cache=None, fleet=None, tune_on_miss=False):
        lib = _lib.load()
        self._lib = lib
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # calls running outside the lock (prewarm's parallel compiles); close waits for them
        opts = _lib.Options()
        self._cache_b = _cpath("cache", cache) if cache is not None else None
        self._fleet_b = _cpath("fleet", fleet) if fleet is not None else None
        opts.cache_path = self._cache_b
        opts.fleet_path = self._fleet_b
        opts.log = _LOG_CB
        if not isinstance(tune_on_miss, (bool, int)) or tune_on_miss not in (0, 1):  # "no" was truthy
            _bad("tune_on_miss: expected True or False, got %r" % (tune_on_miss,))
        opts.tune_on_miss = 1 if tune_on_miss else 0
        h = c_void_p()
        st = lib.sale_create(byref(h), byref(opts))
        if st != _lib.OK:
            msg = lib.sale_last_error(h).decode("utf-8", "replace") if h.value else "out of memory"
            if h.value:
                lib.sale_destroy(h)
            _raise(st, "sale_create: " + msg)
        self._h = h

    @property
    def handle(self):
        if self._h is None:
            raise SaleError("sale: this context is closed")
        return self._h

    def last_error(self):
        with self._lock:
            return self._lib.sale_last_error(self.handle).decode("utf-8", "replace")

    @contextlib.contextmanager
    def _shared(self):
        """The handle, for calls that run concurrently outside the lock (the C calls are
        thread-safe; sale_destroy is not concurrent with anything): close() waits until
        every such use has ended."""
        with self._lock:
            h = self.handle
            self._busy += 1
        try:
            yield h
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def check(self, st, what=None):
        if st != _lib.OK:
            msg = self.last_error()
            _raise(st, ("%s: %s" % (what, msg)) if what else msg)

    @property
    def cache_path(self):
        # a path is bytes to the OS: one given as bytes that are not UTF-8 comes back as the str os.fsencode
        # turns into those bytes again (open() and subprocess take it), not a UnicodeDecodeError
        with self._lock:
            return os.fsdecode(self._lib.sale_cache_path(self.handle))

    def thresholds_changed(self):
        """Make this context read stored thresholds again. A context reads a (model,
        layer)'s thresholds once and keeps them; a store through it is seen at once,
        another process's (the `sale calibrate` command that sale.calibrate runs) only
        by a new context, or after this (sale_thresholds_reload). sale.calibrate calls
        it; call it after running `sale calibrate` yourself."""
        lib = self._lib
        _need(self, "sale_thresholds_reload")
        with self._lock:
            self.check(lib.sale_thresholds_reload(self.handle), "sale: re-reading stored thresholds")

    def close(self):
        with getattr(self, "_lock", threading.RLock()):  # never under a call another thread is making
            while getattr(self, "_busy", 0):
                self._idle.wait()
            h, self._h = getattr(self, "_h", None), None
            if h is not None:
                self._lib.sale_destroy(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_default = None
_default_lock = threading.Lock()


def default_context():
    """The process-wide context (created at first use; cache from $SALE_CACHE_DIR etc.)."""
    global _default
    if _default is None or _default._h is None:
        with _default_lock:
            if _default is None or _default._h is None:  # a closed one is replaced
                _default = Context()
    return _default


def _ctx(context):
    if context is None:
        return default_context()
    if not isinstance(context, Context):
        _bad("context: expected a sale.Context (None: the default one), got %r" % (context,))
    return context


# --------------------------------------------------------------- tensors

_MODES = {"fused": _lib.MODE_FUSED, "two_pass": _lib.MODE_TWO_PASS, "dense": _lib.MODE_DENSE,
          "plain": _lib.MODE_PLAIN, "auto": _lib.MODE_AUTO}
_torch = None
_DTYPES = None


def _t():
    global _torch, _DTYPES, _cur_dev, _raw_stream
    if _torch is None:
        import torch
        _DTYPES = {torch.float16: _lib.DTYPE_F16, torch.bfloat16: _lib.DTYPE_BF16, torch.float32: _lib.DTYPE_F32}
        # the current device and the raw handle of a device's current stream, by torch's C
        # bindings where this torch has them (each public call adds a few microseconds of
        # checks a call, on CUDA tensors that are already initialised); else the public API
        c = getattr(torch, "_C", None)
        get_dev = getattr(c, "_cuda_getDevice", None)
        raw = getattr(c, "_cuda_getCurrentRawStream", None)
        _cur_dev = get_dev if callable(get_dev) else torch.cuda.current_device
        _raw_stream = raw if callable(raw) else (lambda i: torch.cuda.current_stream(i).cuda_stream)
        _torch = torch
        _load_ops()
    return _torch


_ops = None


def _load_ops():
    """torch.ops.sale.attention (_ops.py), registered once torch is imported: outside
    any torch.compile trace (sale/__init__ and the transformers hook call this too)."""
    global _ops
    if _ops is None:
        try:
            from . import _ops as ops
        except (AttributeError, ImportError) as e:  # a torch without torch.library.custom_op (< 2.4)
            _log.debug("sale: no torch.compile op (%s); sale.attention works, a compiled call breaks the graph", e)
            return
        _ops = ops


_cur_dev = _raw_stream = None


def _strides(name, t, layout):
    """(batch, head, row) element strides of a 4-D tensor in `layout`; a dimension
    of size 1 gets 0 (its stride is never used; 0 means 'contiguous' to C)."""
    if t.stride(3) != 1 and t.shape[3] > 1:
        _bad("%s: the last dimension (head_dim) must be contiguous (stride 1), got strides %s; call .contiguous()"
             % (name, tuple(t.stride())))
    s = t.stride()
    sz = t.shape
    dims = (0, 1, 2) if layout == "bhnd" else (0, 2, 1)
    out = []
    for d in dims:
        if sz[d] == 1:
            out.append(0)
        elif s[d] <= 0:
            _bad("%s: stride %d along dimension %d (an expanded or flipped tensor, strides %s); pass K/V with "
                 "their own kv heads (GQA is handled inside) or call .contiguous()" % (name, s[d], d, tuple(s)))
        else:
            out.append(s[d])
    return out


def _extent(t):
    """Bytes from t's first element to past its last (its elements lie in [data_ptr, data_ptr + extent))."""
    return (sum((sz - 1) * st for sz, st in zip(t.shape, t.stride()) if sz > 1) + 1) * t.element_size()


def _self_overlap(out):
    """out's rows are written in parallel: refuse an out whose elements overlap each other (a silent wrong result)."""
    dims = sorted((st, sz) for sz, st in zip(out.shape, out.stride()) if sz > 1)
    reach = 0
    for st, sz in dims:
        if st <= reach:
            _bad("out: its elements overlap each other (shape %s, strides %s); pass a tensor of distinct elements, "
                 "e.g. torch.empty_like(q)" % (tuple(out.shape), tuple(out.stride())))
        reach += (sz - 1) * st


_zero_taus = {}


def _tau_ok(v):
    """One tau as sale.attention takes it: a real number (numpy's too, not a bool) in [0, 1) as the C float it
    becomes (1 - 1e-12 is 1.0f, which the library refuses as "tau_default"); NaN fails the comparisons."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < 1 and c_float(v).value < 1


def _set_tau(a, tau, Hq, keep):
    torch = _torch
    if tau is None:
        return
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool):  # numpy's float32 too
        t = float(tau)
        if not _tau_ok(t):
            _bad("tau: must be in [0, 1), got %r" % (tau,))
        if t > 1e-5:
            a.tau_default = t
            return
        arr = _zero_taus.get(Hq)  # tau <= 1e-5: every head dense (tau_default 0 would mean 0.004)
        if arr is None:
            arr = _zero_taus[Hq] = (c_float * Hq)(*([0.0] * Hq))
        a.tau = ctypes.cast(arr, ctypes.POINTER(c_float))
        return
    if isinstance(tau, tuple) and len(tau) == 2 and isinstance(tau[0], str):
        model, layer = tau
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool) or layer < 0:
            _bad("tau: (model, layer) needs a layer index >= 0, got %r" % (layer,))
        layer = _cint("tau: layer", layer)
        mb = _cstr("tau: model", model)
        keep.append(mb)
        a.model = mb
        a.layer = layer
        a.tau = None
        return
    if torch is not None and isinstance(tau, torch.Tensor):
        if tau.device.type != "cpu":
            _bad("tau: per-head thresholds are read on the host: pass a CPU tensor or a list (a %s tensor would "
                 "need a sync)" % tau.device)
        if tau.dim() > 1:  # one value a query head: a [2, 16] tensor is not 32 heads' taus
            _bad("tau: a per-head tensor has one dimension, got shape %s" % (tuple(tau.shape),))
        tau = tau.detach().reshape(-1).tolist()
    if isinstance(tau, (str, bytes)):
        _bad("tau: expected a float, a per-head list/tensor or (model, layer), got %r" % (tau,))
    try:
        vals = [float(x) for x in tau]
    except (TypeError, ValueError):
        _bad("tau: expected a float, a per-head list/tensor or (model, layer), got %r" % (type(tau).__name__,))
    if len(vals) != Hq:
        _bad("tau: %d per-head values given for %d query heads" % (len(vals), Hq))
    arr = (c_float * Hq)(*vals)
    keep.append(arr)
    a.tau = ctypes.cast(arr, ctypes.POINTER(c_float))


def _prepare(q, k, v, tau, mode, layout, scale, out, device_kind, opts, keep):
    """Check the tensors, fill an AttentionArgs. Returns (args, out, B, Hq, N, D)."""
    torch = _t()
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            _bad("%s: expected a torch.Tensor, got %s" % (name, type(t).__name__))
        if t.layout != torch.strided:
            _bad("%s: a %s tensor; sale takes dense (strided) tensors: call .to_dense()" % (name, t.layout))
        if t.dim() != 4:
            _bad("%s: expected 4 dimensions [B, %s], got shape %s" %
                 (name, "H, N, D" if layout == "bhnd" else "N, H, D", tuple(t.shape)))
    if layout not in ("bhnd", "bnhd"):
        _bad("layout: 'bhnd' ([B, H, N, D]) or 'bnhd' ([B, N, H, D]), got %r" % (layout,))
    dev = q.device
    if device_kind == "cuda":
        if dev.type != "cuda":
            _bad("q: sale.attention runs on CUDA tensors, q is on %s (use sale.reference_attention for CPU "
                 "tensors)" % dev)
    elif dev.type != "cpu":
        _bad("q: sale.reference_attention runs on CPU tensors, q is on %s (use sale.attention)" % dev)
    for name, t in (("k", k), ("v", v)):
        if t.device != dev:
            _bad("%s: on %s, q on %s: all tensors must be on one device" % (name, t.device, dev))
    dt = _DTYPES.get(q.dtype)
    if dt is None or (device_kind == "cuda" and dt == _lib.DTYPE_F32):
        _bad("q: dtype %s not supported (%s)" % (q.dtype, "float16 or bfloat16" if device_kind == "cuda"
                                                    else "float32, float16 or bfloat16"))
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _bad("%s: dtype %s, q has %s: q, k and v must share one dtype" % (name, t.dtype, q.dtype))
    if layout == "bhnd":
        B, Hq, N, D = q.shape
        _, Hkv, Nk, Dk = k.shape
    else:
        B, N, Hq, D = q.shape
        _, Nk, Hkv, Dk = k.shape
    if k.shape != v.shape:
        _bad("v: shape %s differs from k's %s" % (tuple(v.shape), tuple(k.shape)))
    if k.shape[0] != B:
        _bad("k: batch %d, q has batch %d" % (k.shape[0], B))
    if Dk != D:
        _bad("k: head_dim %d, q has head_dim %d" % (Dk, D))
    if Nk != N:
        _bad("k: %d keys for %d queries: sale computes causal prefill (query i sees keys 0..i), lengths must "
             "match" % (Nk, N))
    if min(B, N, Hq, D) < 1:
        _bad("q: empty tensor, shape %s" % (tuple(q.shape),))
    if Hkv < 1:
        _bad("k: empty tensor (no kv heads), shape %s" % (tuple(k.shape),))
    if Hq % Hkv:
        _bad("heads: %d query heads are not a multiple of %d kv heads (GQA needs heads_q %% heads_kv == 0)"
             % (Hq, Hkv))
    for f, n in (("batch", B), ("heads_q", Hq), ("heads_kv", Hkv), ("seq_len", N), ("head_dim", D)):
        if n > _INT_MAX:
            _bad("q: %s %d is too large (more than %d, a C int)" % (f, n, _INT_MAX))
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=dev)
    else:
        if not isinstance(out, torch.Tensor) or out.shape != q.shape or out.dtype != q.dtype or out.device != dev:
            _bad("out: expected a tensor of q's shape %s, dtype %s, on %s; got %s" %
                 (tuple(q.shape), q.dtype, dev, (tuple(out.shape), out.dtype, out.device)
                  if isinstance(out, torch.Tensor) else type(out).__name__))
        if out.layout != torch.strided:
            _bad("out: a %s tensor; sale writes dense (strided) tensors" % (out.layout,))
        _self_overlap(out)
    a = AttentionArgs()
    a.batch, a.heads_q, a.heads_kv, a.seq_len, a.head_dim = B, Hq, Hkv, N, D
    a.dtype = dt
    a.q, a.k, a.v, a.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    a.q_stride[:] = _strides("q", q, layout)
    a.k_stride[:] = _strides("k", k, layout)
    a.v_stride[:] = _strides("v", v, layout)
    a.o_stride[:] = _strides("out", out, layout)
    a.tau_default = 0.004
    m = _MODES.get(mode) if isinstance(mode, str) else None
    if m is None:
        _bad("mode: 'auto', 'fused', 'two_pass', 'dense' or 'plain', got %r" % (mode,))
    a.mode = m
    if scale is not None:
        # as the C float it becomes: 1e-50 would be 0 there, which means 1/sqrt(head_dim)
        try:
            fs = None if isinstance(scale, (bool, str, bytes)) else c_float(float(scale)).value
        except (TypeError, ValueError, OverflowError):
            fs = None
        if fs is None or not (fs > 0 and math.isfinite(fs)):
            _bad("scale: must be a finite number > 0 (None: 1/sqrt(head_dim)), got %r" % (scale,))
        a.scale = fs
    _set_tau(a, tau, Hq, keep)
    for f, val in opts.items():
        if val is not None:
            setattr(a, f, _cint(f, val))
    return a, out, B, Hq, N, D


def _extras(a, B, Hq, N, dev, return_mask, return_lse, return_stats, keep):
    torch = _torch
    mask = lse = stats = None
    if return_mask:
        nqb = _lib.load().sale_num_qblocks(byref(a))
        nkw = (_lib.load().sale_num_kblocks(byref(a)) + 31) // 32
        mask = torch.zeros((B, Hq, nqb, nkw), dtype=torch.int32, device=dev)
        a.mask = mask.data_ptr()
    if return_lse:
        lse = torch.empty((B, Hq, N), dtype=torch.float32, device=dev)
        a.lse = lse.data_ptr()
    if return_stats:
        stats = Stats()
        per = (ctypes.c_double * (B * Hq))()
        stats.density_per_head = per
        keep.append(per)
        a.stats = ctypes.pointer(stats)
    return mask, lse, stats


def _result(out, mask, lse, stats, return_mask, return_lse, return_stats, B, Hq):
    if not (return_mask or return_lse or return_stats):
        return out
    r = [out]
    if return_mask:
        r.append(mask)
    if return_lse:
        r.append(lse)
    if return_stats:
        r.append({"kept_blocks": stats.kept_blocks, "causal_blocks": stats.causal_blocks,
                  "density": stats.density, "dense_fallback": bool(stats.dense_fallback),
                  "density_per_head": [stats.density_per_head[i] for i in range(B * Hq)]})
    return tuple(r)


_plans = {}
_PLANS_MAX = 512


def _tau_key(tau):
    """tau as a part of the plan key: values that compare equal but are checked differently (True and 1,
    1.0 and 1 as a layer) get different keys; raises TypeError for what reading would consume (an iterator)."""
    torch = _torch
    if isinstance(tau, (numbers.Real, type(None))):
        return (type(tau), tau)
    if isinstance(tau, tuple) and len(tau) == 2 and isinstance(tau[0], str):
        return ("model", tau[0], type(tau[1]), tau[1])
    if torch is not None and isinstance(tau, torch.Tensor):
        if tau.device.type != "cpu":
            return ("tensor", str(tau.device))  # _set_tau refuses it with the message
        return ("tensor", tau.dtype, tuple(tau.shape)) + tuple(tau.detach().reshape(-1).tolist())
    if isinstance(tau, (str, bytes)):
        return ("bad", type(tau).__name__)
    if iter(tau) is tau:
        raise TypeError("an iterator: the key would consume the values _set_tau reads")
    try:
        # never the key of a (model, layer) tuple; each value's type beside it (0.01+0j == 0.01)
        return ("seq",) + tuple((type(x), x) for x in tau)
    except TypeError:
        return ("bad", type(tau).__name__)


def _plan(q, k, v, tau, mode, layout, scale, out, kind, opts):
    """The checked, filled AttentionArgs for these shapes/strides/dtypes/settings,
    cached: a repeated call only copies it and sets the data pointers. The key holds
    each setting's type beside its value: True == 1 and 64.0 == 64 in Python, but
    _prepare refuses one of each pair, and a hit must not accept what a miss refuses."""
    try:
        vals = tuple(opts.values())
        key = (q.shape, q.stride(), q.dtype, q.device, k.shape, k.stride(), k.dtype, k.device, v.shape,
               v.stride(), v.dtype, v.device, None if out is None else (out.shape, out.stride(), out.dtype,
                                                                         out.device),
               _tau_key(tau), type(mode), mode, type(layout), layout, type(scale), scale, kind, vals,
               tuple(map(type, vals)))
        hash(key)
    except (AttributeError, TypeError, RuntimeError):
        key = None  # not tensors (or sparse ones), or unhashable settings: _prepare says what is wrong
    p = _plans.get(key) if key is not None else None
    if p is None:
        keep = []
        a, o, B, Hq, N, D = _prepare(q, k, v, tau, mode, layout, scale, out, kind, opts, keep)
        a.q = a.k = a.v = a.out = None
        ext = tuple(_extent(t) for t in (q, k, v, o))
        p = (bytes(a), keep, B, Hq, N, D, [None], ext)  # [None]: workspace bytes, filled at first use
        if key is not None:
            if len(_plans) >= _PLANS_MAX:
                _plans.clear()
            _plans[key] = p
    return p


def _thr(thr):
    """args.thr of the thr keyword: None (the library's default: fixed on sm_90, run elsewhere and in the
    CPU reference), "run" or "fixed"."""
    if thr is None:
        return None
    t = _lib.THRS.get(thr) if isinstance(thr, str) else None
    if t is None:
        _bad("thr: 'run' or 'fixed' (None: the device's default), got %r" % (thr,))
    return t


def _fill(p, q, k, v, out):
    """The plan's args with these tensors' pointers; the checks that depend on more than shapes and strides."""
    if (q.requires_grad or k.requires_grad or v.requires_grad) and _torch.is_grad_enabled():
        _bad("q, k, v: sale has no backward, and a tensor requires grad: the result would silently have none; "
             "call under torch.no_grad() or pass .detach()ed tensors")
    a = AttentionArgs.from_buffer_copy(p[0])
    given = out is not None
    if out is None:
        out = _torch.empty(q.shape, dtype=q.dtype, device=q.device)
    a.q, a.k, a.v, a.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    if given:  # out is written while q, k, v are read: a view of one of them gives a silent wrong result
        eq, ek, ev, eo = p[7]
        for name, ptr, e in (("q", a.q, eq), ("k", a.k, ek), ("v", a.v, ev)):
            if a.out < ptr + e and ptr < a.out + eo:
                _bad("out: overlaps %s in memory (sale writes out while it reads %s); pass a separate tensor" %
                     (name, name))
    return a, out


def attention(q, k, v, *, tau=0.004, mode="auto", layout="bhnd", scale=None, out=None, return_mask=False,
              return_lse=False, return_stats=False, context=None, block_q=None, block_k=None, block_seg=None,
              local_window=None, est_bits=None, dense_below=None, tile_warps=None, tile_stages=None, thr=None):
    """SALE causal prefill attention on CUDA tensors, queued on the current CUDA
    stream of q's device (no copies; no syncs unless return_stats or thresholds
    that must be uploaded). q [B, Hq, N, D], k, v [B, Hkv, N, D] in layout "bhnd"
    ([B, N, H, D] in "bnhd"), fp16 or bf16, any strides with a contiguous last
    dimension. tau: one float for every head, a per-head list / CPU tensor of Hq
    values, or (model, layer) for thresholds stored by sale.calibrate; a head with
    tau <= 1e-5 runs dense. mode: "auto" (default: the SALE mode measured fastest
    on the GPU's architecture, two_pass on sm_90, fused elsewhere), "fused", "two_pass", "dense", or
    "plain" (version 0: the algorithm in one slow, plain kernel, for reading and
    for checking the fast ones; same masks as the CPU reference). Returns out (the layout of q), or (out, [mask], [lse],
    [stats]) with what return_* asked for: mask int32 [B, Hq, nqb, ceil(nkb/32)]
    kept-block bits, lse float32 [B, Hq, N], stats a dict (synchronizes).
    thr: the threshold variant, "run" (t_i from the state at every segment's
    start) or "fixed" (t_i once, after the local region and the sink, as the
    authors' default kernel; keeps a superset of run's blocks at the same tau, so
    thresholds calibrated for one are not those of the other). None: fixed on
    sm_90 (its select is the wgmma estimation), run elsewhere.
    With thresholds=(model, layer) stored by a calibration that recorded its
    variant, None runs that variant and the other one is refused.
    tile_warps, tile_stages: a kernel's tiles (None: the tuned winner, else the
    default). On sm_90 at head_dim 128 attend has two kernels: 5 (one mask row a
    CTA) and 12 (two rows a CTA over their union). With default tiles the rows
    kernel runs up to 64K; above, with thr "fixed", the device picks per call
    (the two-row kernel iff the select keeps 3.5% of the causal blocks or more);
    with "run", the rows kernel to 128K and the two-row kernel above."""
    torch = _torch or _t()
    opts = {"block_q": block_q, "block_k": block_k, "block_seg": block_seg, "local_window": local_window,
            "est_bits": est_bits, "dense_below": dense_below, "tile_warps": tile_warps, "tile_stages": tile_stages,
            "thr": thr}
    if (_ops is not None and _ops.compiling() and
            _ops.traceable(q, k, v, tau, scale, opts, out, return_mask or return_lse or return_stats, context)):
        return _ops.call(q, k, v, tau, mode, layout, scale, layout, False, opts)
    opts["thr"] = _thr(thr)
    p = _plan(q, k, v, tau, mode, layout, scale, out, "cuda", opts)
    a, out = _fill(p, q, k, v, out)
    B, Hq, N = p[2], p[3], p[4]
    dev = q.device
    keep = []
    if return_mask or return_lse or return_stats:
        mask, lse, stats = _extras(a, B, Hq, N, dev, return_mask, return_lse, return_stats, keep)
    ctx = context if type(context) is Context else _ctx(context)
    lib = ctx._lib
    cur = _cur_dev()
    idx = cur if dev.index is None else dev.index
    guard = torch.cuda.device(dev) if idx != cur else None
    if guard is not None:
        guard.__enter__()
    try:
        stream = _raw_stream(idx)
        with ctx._lock:
            nbytes = p[6][0]
            if nbytes is None:
                ws = c_size_t()
                st = lib.sale_attention_workspace_size(ctx.handle, byref(a), byref(ws))
                if st != _lib.OK:
                    ctx.check(st, "sale.attention")
                nbytes = p[6][0] = ws.value
            # the workspace comes from torch's caching allocator: stream-ordered, so
            # calls on different streams never share one buffer
            wsbuf = torch.empty(nbytes, dtype=torch.uint8, device=dev)
            a.workspace = wsbuf.data_ptr()
            a.workspace_bytes = nbytes
            st = lib.sale_attention(ctx.handle, byref(a), c_void_p(stream))
            if st != _lib.OK:
                ctx.check(st, "sale.attention")
    finally:
        if guard is not None:
            guard.__exit__(None, None, None)
    if not (return_mask or return_lse or return_stats):
        return out
    return _result(out, mask, lse, stats, return_mask, return_lse, return_stats, B, Hq)


def reference_attention(q, k, v, *, tau=0.004, mode="auto", layout="bhnd", scale=None, out=None,
                        return_mask=False, return_lse=False, return_stats=False, context=None, block_q=None,
                        block_k=None, block_seg=None, local_window=None, est_bits=None, dense_below=None, thr=None):
    """The plain C reference of the same algorithm (sale_reference_attention) on CPU
    tensors (float32, float16 or bfloat16): the signature of sale.attention, so an
    integration can be checked without a GPU. mode "dense" is exact attention."""
    _t()
    opts = {"block_q": block_q, "block_k": block_k, "block_seg": block_seg, "local_window": local_window,
            "est_bits": est_bits, "dense_below": dense_below, "thr": thr}
    if (_ops is not None and _ops.compiling() and
            _ops.traceable(q, k, v, tau, scale, opts, out, return_mask or return_lse or return_stats, context)):
        return _ops.call(q, k, v, tau, mode, layout, scale, layout, True, opts)
    opts["thr"] = _thr(thr)
    p = _plan(q, k, v, tau, mode, layout, scale, out, "cpu", opts)
    a, out = _fill(p, q, k, v, out)
    B, Hq, N = p[2], p[3], p[4]
    keep = []
    mask, lse, stats = _extras(a, B, Hq, N, q.device, return_mask, return_lse, return_stats, keep)
    ctx = _ctx(context)
    with ctx._lock:
        st = ctx._lib.sale_reference_attention(ctx.handle, byref(a))
        if st != _lib.OK:
            ctx.check(st, "sale.reference_attention")
    return _result(out, mask, lse, stats, return_mask, return_lse, return_stats, B, Hq)


def mask_to_blocks(mask, num_kblocks):
    """Expand a kept-block bitmask [B, Hq, nqb, words] (int32) into bool [B, Hq, nqb, nkb]."""
    torch = _t()
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.int32 or mask.dim() < 1:
        _bad("mask: expected the int32 kept-block mask [B, Hq, nqb, words] sale returns, got %s" %
             ((mask.dtype, tuple(mask.shape)) if isinstance(mask, torch.Tensor) else type(mask).__name__,))
    _cint("num_kblocks", num_kblocks, 0)
    if num_kblocks > mask.shape[-1] * 32:
        _bad("num_kblocks: %d blocks, the mask's %d words hold %d" % (num_kblocks, mask.shape[-1],
                                                                     mask.shape[-1] * 32))
    bits = torch.arange(32, device=mask.device, dtype=torch.int32)
    m = ((mask.unsqueeze(-1) >> bits) & 1).bool()
    return m.reshape(*mask.shape[:-1], -1)[..., :num_kblocks]


# ---------------------------------------------------------------- kernels

def _parse_key(ctx, key):
    if isinstance(key, Key):
        return key
    if not isinstance(key, str):
        _bad("key: expected key text like 'fused:d=128,dt=bf16,arch=sm_90', got %r" % (key,))
    k = Key()
    err = ctypes.create_string_buffer(256)
    st = ctx._lib.sale_key_parse(_cstr("key", key), byref(k), err, 256)
    if st != _lib.OK:
        _raise(st, "key %r: %s" % (key, err.value.decode()))
    return k


def format_key(key, context=None):
    ctx = _ctx(context)
    k = _parse_key(ctx, key)
    buf = ctypes.create_string_buffer(256)
    ctx.check(ctx._lib.sale_key_format(byref(k), buf, 256), "sale_key_format")
    return buf.value.decode()


def _info(ki):
    d = {}
    for f, _ in KernelInfo._fields_:
        v = getattr(ki, f)
        d[f] = v.decode() if isinstance(v, bytes) else v
    d["from_cache"] = bool(d["from_cache"])
    return d


def get_kernel(key, context=None):
    """Load the kernel for `key` on the current CUDA device (compiled once, then from
    the cache; open fields resolved to the tuned winner or the defaults). Needs a GPU
    (sale.NoDevice otherwise; sale.compile works without one). Returns its info."""
    ctx = _ctx(context)
    k = _parse_key(ctx, key)
    kp = c_void_p()
    with ctx._lock:
        ctx.check(ctx._lib.sale_get_kernel(ctx.handle, byref(k), byref(kp)), "sale.get_kernel(%r)" % (key,))
        ki = KernelInfo()
        ctx.check(ctx._lib.sale_kernel_get_info(kp, byref(ki)), "sale_kernel_get_info")
    return _info(ki)


def compile(key, context=None):
    """Compile `key` (arch must be explicit, open fields take the defaults) into the
    cache; no GPU needed. Returns the kernel info."""
    ctx = _ctx(context)
    k = _parse_key(ctx, key)
    err = ctypes.create_string_buffer(256)
    st = ctx._lib.sale_key_resolve(byref(k), err, 256)
    if st != _lib.OK:
        _raise(st, "key %r: %s" % (key, err.value.decode()))
    ki = KernelInfo()
    with ctx._lock:
        ctx.check(ctx._lib.sale_compile(ctx.handle, byref(k), byref(ki)), "sale.compile(%r)" % (key,))
    return _info(ki)


def prewarm(keys=None, *, archs=("sm_80", "sm_86", "sm_89", "sm_90"), head_dims=(64, 128),
            families=("quantize", "fused", "select", "attend", "dense"), dtypes=("bf16", "f16"),
            thrs=("run", "fixed"), jobs=None, context=None):
    """Compile a set of kernels into the cache (no GPU needed), like `sale prewarm`:
    the given key texts as they are, or archs x head_dims x families x dtypes x thrs
    as sale_attention runs them on each arch (sale_key_run_set: on sm_90 the wgmma
    kernels, sm_90a cubins, and attend's rows kernel beside its two-row one; thrs
    only matters to fused and select). Kernels already cached are not compiled
    again. Returns the infos, one per distinct key."""
    ctx = _ctx(context)
    seen = {}

    def add(k):
        buf = ctypes.create_string_buffer(256)
        ctx._lib.sale_key_format(byref(k), buf, 256)
        seen.setdefault(buf.value.decode(), k)

    if keys is None:
        _need(ctx, "sale_key_run_set")
        for a in archs:
            for f in families:
                for d in head_dims:
                    _cint("head_dims", d)
                    for t in dtypes:
                        for thr in thrs:
                            text = "%s:d=%d,dt=%s,arch=%s,thr=%s" % (f, d, t, a, thr)
                            k = _parse_key(ctx, text)
                            run = (Key * 2)()
                            err = ctypes.create_string_buffer(256)
                            n = ctx._lib.sale_key_run_set(byref(k), run, err, 256)
                            if n < 0:
                                _raise(_lib.ERR_INVALID, "key %r: %s" % (text, err.value.decode()))
                            for i in range(n):
                                add(run[i])
    else:
        if isinstance(keys, str):
            keys = [keys]
        try:
            keys = list(keys)
        except TypeError:
            _bad("keys: expected key text or a list of key texts, got %r" % (keys,))
        for text in keys:
            k = _parse_key(ctx, text)
            err = ctypes.create_string_buffer(256)
            st = ctx._lib.sale_key_resolve(byref(k), err, 256)
            if st != _lib.OK:
                _raise(st, "key %r: %s" % (text, err.value.decode()))
            add(k)
    todo = list(seen.items())
    results = [None] * len(todo)
    errors = []

    def work(i):
        text, k = todo[i]
        ki = KernelInfo()
        st = ctx._lib.sale_compile(h, byref(k), byref(ki))  # thread-safe, releases the GIL
        if st != _lib.OK:  # the calling thread's message (kept per thread)
            errors.append((st, "%s: %s" % (text, ctx._lib.sale_last_error(h).decode("utf-8", "replace"))))
        else:
            results[i] = _info(ki)

    n = (_cint("jobs", jobs, 0) if jobs is not None else 0) or os.cpu_count() or 1
    with ctx._shared() as h:  # a close() on another thread waits for the compiles (was a use after free)
        if n > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=n) as ex:
                list(ex.map(work, range(len(todo))))
        else:
            for i in range(len(todo)):
                work(i)
    if errors:
        _raise(errors[0][0], "sale.prewarm: %d of %d kernels failed; first: %s" % (len(errors), len(todo),
                                                                                     errors[0][1]))
    return results


def devices(context=None):
    """CUDA devices libsale sees ([] with no driver)."""
    ctx = _ctx(context)
    n = c_int()
    with ctx._lock:
        if ctx._lib.sale_device_count(ctx.handle, byref(n)) != _lib.OK:
            return []
        infos = []
        for i in range(n.value):
            di = _lib.DeviceInfo()
            infos.append((ctx._lib.sale_device_info_get(ctx.handle, i, byref(di)), di))
    outl = []
    for st, di in infos:
        if st == _lib.OK:
            outl.append({"ordinal": di.ordinal, "name": di.name.decode(), "arch": di.arch,
                         "sm_count": di.sm_count, "driver_version": di.driver_version, "total_mem": di.total_mem,
                         "smem_optin": di.smem_optin})
    return outl


def nvrtc_version():
    v = c_int()
    lib = _lib.load()
    if lib.sale_nvrtc_version(byref(v)) != _lib.OK:
        return None
    return "%d.%d" % (v.value // 1000, (v.value % 1000) // 10)


def cache_info(context=None):
    """Where the cache is and what is in it: path, bytes (with the WAL), kernels and
    thresholds rows (read with Python's sqlite3, read-only), NVRTC, library, devices."""
    ctx = _ctx(context)
    path = ctx.cache_path
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    info = {"path": path, "bytes": size, "nvrtc": nvrtc_version(), "library": _lib.library_path(),
            "nvrtc_library": _lib.nvrtc_path(), "devices": devices(ctx)}
    if path != ":memory:" and os.path.exists(path):
        try:
            import sqlite3
            from urllib.parse import quote  # a path with '?', '#' or '%' is not a URI
            # quoted as the file name's bytes: the str of a name that is not UTF-8 (0xff is os.fsdecode's
            # surrogate) does not encode as UTF-8, and SQLite decodes %FF back to the byte 0xff
            db = sqlite3.connect("file:%s?mode=ro" % quote(os.fsencode(path)), uri=True, timeout=5)
            try:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                for t in tables:
                    if t in ("kernels", "thresholds", "tuned"):
                        info[t] = db.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
            finally:
                db.close()
        except Exception as e:  # the counts are a courtesy; never fail for them
            info["error"] = str(e)
    return info


# ------------------------------------------------------------- thresholds

def _need(ctx, name):
    if not hasattr(ctx._lib, name) or getattr(ctx._lib, name).restype is None:
        raise NotFound("%s is not in this libsale (%s)" % (name, _lib.library_path()), _lib.ERR_NOT_FOUND)


def thresholds(model, layer, heads, context=None, meta=False):
    """Stored per-head thresholds of (model, layer) as a list (sale.NotFound if absent).
    meta=True: (taus, infos), an info a dict per head of how its tau was chosen:
    budget, budget_abs, samples, created (unix seconds; 0 unknown), density and
    error (worst sample; -1 unknown), thr ("run", "fixed", or None: not recorded)."""
    ctx = _ctx(context)
    _need(ctx, "sale_thresholds_get")
    mb, layer, heads = _cstr("model", model), _cint("layer", layer), _cint("heads", heads, 1)
    if heads > 1 << 20:  # (2^31 - 1 heads asked for an 8 GB buffer before C was called)
        _bad("heads: %d is more than the %d query heads a layer may have here" % (heads, 1 << 20))
    arr = (c_float * heads)()
    infos = (_lib.ThresholdMeta * heads)() if meta else None
    with ctx._lock:
        ctx.check(ctx._lib.sale_thresholds_get(ctx.handle, mb, layer, arr, heads, infos),
                  "thresholds(%r, %d)" % (model, layer))
    if not meta:
        return list(arr)
    names = {v: k for k, v in _lib.THRS.items()}
    return list(arr), [{"budget": m.budget, "budget_abs": bool(m.budget_abs), "samples": m.samples,
                        "created": m.created, "density": m.density, "error": m.error, "thr": names.get(m.thr)}
                       for m in infos]


def put_thresholds(model, layer, tau, budget=0.0, samples=0, context=None, thr=None):
    """Store per-head thresholds for (model, layer) (what sale calibrate writes).
    thr: the variant they were calibrated with ("run" or "fixed"; None: not
    recorded). Recorded, it is the variant sale.attention runs with these
    thresholds when its thr is None; asking for the other one is refused."""
    ctx = _ctx(context)
    _need(ctx, "sale_thresholds_put")
    mb, layer, samples = _cstr("model", model), _cint("layer", layer), _cint("samples", samples, 0)
    try:
        if isinstance(tau, (str, bytes)):
            raise TypeError
        vals = [float(x) for x in tau]
    except (TypeError, ValueError):
        _bad("tau: expected a per-head list of floats, got %r" % (tau,))
    _cint("tau: number of heads", len(vals))
    if isinstance(budget, (bool, str, bytes)) or not isinstance(budget, (int, float)) or not 0 <= budget < math.inf:
        _bad("budget: a finite number >= 0 (0: unknown), got %r" % (budget,))
    arr = (c_float * len(vals))(*vals)
    variant = 0
    if thr is not None:
        variant = _lib.THRS.get(thr) if isinstance(thr, str) else None
        if not variant:
            _bad("thr: 'run' or 'fixed' (None: not recorded), got %r" % (thr,))
    meta = _lib.ThresholdMeta(budget=budget, budget_abs=0, samples=samples, created=0, density=-1, error=-1,
                              thr=variant)
    with ctx._lock:
        ctx.check(ctx._lib.sale_thresholds_put(ctx.handle, mb, layer, arr, len(vals), byref(meta)),
                  "put_thresholds(%r, %d)" % (model, layer))


