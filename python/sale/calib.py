# calib.py — capture a model's post-RoPE Q/K/V into the files `sale calibrate`
# reads (one safetensors file per layer: q [S, Hq, N, D], k, v [S, Hkv, N, D]),
# and run the calibration that turns them into stored per-head thresholds.
import itertools
import json
import math
import numbers
import os
import shutil
import struct
import subprocess
import threading
import warnings

from . import _core, _lib

_ST_DTYPES = {"torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32"}


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def write_safetensors(path, tensors):
    """A minimal safetensors writer (8-byte LE header length, JSON header, data):
    tensors is {name: CPU torch tensor}. Used where the safetensors package is not
    installed; files are identical in layout."""
    if not hasattr(tensors, "items"):
        raise _core.InvalidArgument("write_safetensors: tensors: a dict {name: tensor}, got %s"
                                    % type(tensors).__name__, _lib.ERR_INVALID)
    header, off, parts = {}, 0, []
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise _core.InvalidArgument("write_safetensors: tensor name %r: a str other than '__metadata__' (the "
                                        "format's own key)" % (name,), _lib.ERR_INVALID)
        dt = _ST_DTYPES.get(str(getattr(t, "dtype", None)))
        if dt is None:
            raise _core.InvalidArgument("write_safetensors: %s: dtype %s; sale reads float16, bfloat16 and float32"
                                        % (name, getattr(t, "dtype", type(t).__name__)), _lib.ERR_INVALID)
        if t.device.type == "meta":
            raise _core.InvalidArgument("write_safetensors: %s: a meta tensor has no data to write" % name,
                                        _lib.ERR_INVALID)
        t = t.detach().to("cpu").resolve_neg().resolve_conj().contiguous()
        raw = t.view(-1).view(_core._t().uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        parts.append(raw)
    _write(path, header, parts)


def _write(path, header, parts):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    path = os.fspath(path)  # a str or a pathlib.Path
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for p in parts:
                if isinstance(p, str):  # a spool file: copy it in chunks
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, f, 1 << 24)
                else:
                    f.write(p)
        os.replace(tmp, path)
    except BaseException:
        try:  # a failed write leaves no <path>.tmp behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_safetensors(path):
    """Read a safetensors file into {name: torch tensor} (for tests and checks)."""
    torch = _core._t()
    rev = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    with open(path, "rb") as f:
        raw = f.read()
    try:  # a malformed file is named, never a bare json/KeyError from inside
        n = struct.unpack("<Q", raw[:8])[0]
        if n > len(raw) - 8:
            raise ValueError("header of %d bytes past the file's end" % n)
        header = json.loads(raw[8:8 + n])
        data = raw[8 + n:]
        out = {}
        for name, m in header.items():
            if name == "__metadata__":
                continue
            a, b = m["data_offsets"]
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= len(data)):
                raise ValueError("%s: data_offsets [%r, %r] outside the %d data bytes" % (name, a, b, len(data)))
            dt, shape = rev[m["dtype"]], m["shape"]
            # reshape would infer a -1 (a file with shape [-1] read as if valid) and take a bool for 0/1
            if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
                raise ValueError("%s: shape %r: a list of ints >= 0" % (name, shape))
            n = torch.empty(0, dtype=dt).element_size()
            for s in shape:
                n *= s
            if n != b - a:
                raise ValueError("%s: shape %r of %s is %d bytes, data_offsets [%d, %d] hold %d"
                                 % (name, shape, m["dtype"], n, a, b, b - a))
            buf = bytearray(data[a:b])
            t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
            out[name] = t.view(dt).reshape(shape)
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise _core.InvalidArgument("%s: not a safetensors file sale reads (%s: %s)" % (path, type(e).__name__, e))
    return out


# ------------------------------------------------------------------ capture

_active = {}  # id(config) -> Capture
_lock = threading.Lock()
CAPTURE_NAME = "sale_capture"


class Capture:
    """`with sale.capture(model, "calib/"):` — every prefill forward run inside the
    block records each attention layer's q, k, v as the attention function sees
    them (after RoPE, kv heads not repeated). Each batch row is one sample; all
    samples must have the same length N. On exit, writes calib/layer_{L:03d}.safetensors.
    Decode steps (query shorter than the keys) are not recorded."""

    def __init__(self, model, directory, layers=None):
        self.model = model
        self.dir = directory
        given, chosen = layers, None
        if layers is not None:  # an int or a str would be a TypeError or a set of characters
            try:
                chosen = set(layers) if not isinstance(layers, (str, bytes)) else None
            except TypeError:
                chosen = None
            if chosen is None or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in chosen):
                raise _core.InvalidArgument("capture: layers: an iterable of layer indices >= 0 (or None), got %r"
                                            % (given,))
        self.layers = chosen
        self.spool = os.path.join(directory, ".spool")
        self.meta = {}  # layer -> {"n": samples, "q": (H, N, D), "k": ..., "dtype": ...}
        self.orig = None

    def _record(self, module, query, key, value):
        layer = getattr(module, "layer_idx", None)
        if layer is None or query.shape[2] != key.shape[2]:
            return
        if self.layers is not None and layer not in self.layers:
            return
        m = self.meta.get(layer)
        shp = {"q": tuple(query.shape[1:]), "k": tuple(key.shape[1:]), "v": tuple(value.shape[1:])}
        if m is None:
            m = self.meta[layer] = {"n": 0, "dtype": str(query.dtype), **shp}
        elif any(m[t] != shp[t] for t in shp):
            raise _core.InvalidArgument(
                "sale.capture: layer %d got q %s, earlier samples had %s: every captured prompt must have the "
                "same number of tokens (pad or truncate the prompts to one length)" % (layer, shp["q"], m["q"]))
        for name, t in (("q", query), ("k", key), ("v", value)):
            raw = t.detach().to("cpu").contiguous()
            with open(os.path.join(self.spool, "layer_%03d_%s.bin" % (layer, name)), "ab") as f:
                f.write(raw.view(-1).view(_core._t().uint8).numpy().tobytes())
        m["n"] += query.shape[0]

    def __enter__(self):
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
        cfg = self.model.config
        if id(cfg) in _active or cfg._attn_implementation == CAPTURE_NAME:
            raise _core.InvalidArgument("sale.capture: this model is already being captured (captures of one model "
                                        "do not nest)", _lib.ERR_INVALID)
        os.makedirs(self.spool, exist_ok=True)
        for f in os.listdir(self.spool):
            os.remove(os.path.join(self.spool, f))
        self.orig = cfg._attn_implementation or "sdpa"
        AttentionInterface.register(CAPTURE_NAME, _capture_forward)
        AttentionMaskInterface.register(CAPTURE_NAME, _capture_mask)
        with _lock:
            _active[id(cfg)] = self
        self._mask_fn = ALL_MASK_ATTENTION_FUNCTIONS[self.orig] if self.orig in ALL_MASK_ATTENTION_FUNCTIONS \
            else sdpa_mask
        self.model.set_attn_implementation(CAPTURE_NAME)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.model.set_attn_implementation(self.orig)
        finally:
            with _lock:
                _active.pop(id(self.model.config), None)
        if exc_type is None:
            self._write()
        shutil.rmtree(self.spool, ignore_errors=True)
        return False

    def _write(self):
        torch = _core._t()
        for layer, m in sorted(self.meta.items()):
            header, off, parts = {}, 0, []
            esz = torch.empty(0, dtype=getattr(torch, m["dtype"].split(".")[1])).element_size()
            for name in ("q", "k", "v"):
                shape = [m["n"], *m[name]]
                nbytes = esz
                for s in shape:
                    nbytes *= s
                header[name] = {"dtype": _ST_DTYPES[m["dtype"]], "shape": shape, "data_offsets": [off, off + nbytes]}
                off += nbytes
                parts.append(os.path.join(self.spool, "layer_%03d_%s.bin" % (layer, name)))
            _write(os.path.join(self.dir, "layer_%03d.safetensors" % layer), header, parts)

    @property
    def files(self):
        return [os.path.join(self.dir, "layer_%03d.safetensors" % L) for L in sorted(self.meta)]


def _owner(module):
    return _active.get(id(getattr(module, "config", None)))


def _capture_forward(module, query, key, value, attention_mask, **kwargs):
    cap = _owner(module)
    if cap is None:  # a module whose config is not the captured model's: look further
        cap = next(iter(_active.values()), None)
    if cap is None:
        raise RuntimeError("sale.capture: attention called outside a capture block")
    cap._record(module, query, key, value)
    from transformers import AttentionInterface  # noqa: F401
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    if cap.orig == "eager":
        mod = __import__(type(module).__module__, fromlist=["eager_attention_forward"])
        fn = getattr(mod, "eager_attention_forward")
    else:
        fn = ALL_ATTENTION_FUNCTIONS[cap.orig]
    return fn(module, query, key, value, attention_mask, **kwargs)


def _capture_mask(*args, **kwargs):
    cap = next(iter(_active.values()), None)
    from transformers.masking_utils import sdpa_mask
    fn = cap._mask_fn if cap is not None else sdpa_mask
    return fn(*args, **kwargs)


def capture(model, directory, layers=None):
    return Capture(model, directory, layers)


# ---------------------------------------------------------------- calibrate

def calibrate(directory, model, budget=0.02, budget_abs=None, device="auto", context=None, extra_args=(),
              check=True, thr=None, dense_above=None):
    """Choose per-head thresholds for every layer file in `directory` to an error
    budget and store them in the cache under `model` (then sale.attention(...,
    tau=(model, layer)) and attn_implementation="sale" use them). Runs the `sale
    calibrate` command shipped with the package on the context's cache file.
    thr: "run" or "fixed", the threshold variant the attention calls will use
    (None: the command's default, what attention runs on the evaluating GPU:
    fixed on sm_90, run elsewhere and on the CPU). It is stored with the
    thresholds. dense_above: a head whose chosen tau keeps this fraction of its
    blocks or more runs dense instead (None: the command's default, 0.5; 0:
    never). Returns the command's output (its summary table); the
    command's warnings (one sample per layer: a tau that may not hold on
    other prompts) are raised as UserWarning."""
    # the arguments first: a bad one is the caller's error wherever the command is
    for name, val in (("model", model), ("device", device)):
        if not isinstance(val, str) or not val or "\0" in val:
            raise _core.InvalidArgument("%s: a non-empty str without NUL bytes, got %r" % (name, val), _lib.ERR_INVALID)
    try:
        if "\0" in os.fsdecode(directory):
            raise TypeError
    except TypeError:
        raise _core.InvalidArgument("directory: a path without NUL bytes, got %r" % (directory,),
                                    _lib.ERR_INVALID) from None
    if isinstance(extra_args, (str, bytes)):
        raise _core.InvalidArgument("extra_args: a list of command arguments, got the string %r" % (extra_args,),
                                    _lib.ERR_INVALID)
    if thr is not None and thr not in _lib.THRS:
        raise _core.InvalidArgument("thr: 'run' or 'fixed' (None: the device's default), got %r" % (thr,), _lib.ERR_INVALID)
    if dense_above is not None and (not _real(dense_above) or not 0 <= dense_above <= 1):
        raise _core.InvalidArgument("dense_above: a fraction of blocks in [0, 1] (0: never), got %r"
                                    % (dense_above,), _lib.ERR_INVALID)
    for name, val in (("budget", budget), ("budget_abs", budget_abs)):
        if val is not None and not (_real(val) and 0 < val < math.inf):
            raise _core.InvalidArgument("%s: a finite number > 0 (None: %s), got %r" % (
                name, "the command's default, 0.02" if name == "budget" else "a relative budget", val),
                _lib.ERR_INVALID)
    try:
        extra_args = [os.fsdecode(x) for x in extra_args]
    except TypeError:
        raise _core.InvalidArgument("extra_args: a list of command arguments (str), got %r" % (extra_args,),
                                    _lib.ERR_INVALID) from None
    cli = _lib.cli_path()
    if cli is None:
        raise _core.NotFound("sale.calibrate: the `sale` command was not found (sale/bin/sale in the wheel, "
                             "build/sale in a checkout, or $SALE_CLI)", _lib.ERR_NOT_FOUND)
    ctx = _core._ctx(context)
    if ctx.cache_path == ":memory:":  # the command would store into its own in-memory cache, and lose it
        raise _core.InvalidArgument("context: its cache is in memory (':memory:'): the `sale calibrate` command "
                                    "runs in another process and cannot store thresholds there; use a context "
                                    "with a cache file", _lib.ERR_INVALID)
    cmd = [cli, "--cache", ctx.cache_path, "calibrate", "--model", model, "--input", os.fsdecode(directory),
           "--device", device]
    if budget_abs is not None:
        cmd += ["--budget-abs", str(budget_abs)]
    elif budget is not None:
        cmd += ["--budget", str(budget)]
    if thr is not None:
        cmd += ["--thr", thr]
    if dense_above is not None:
        cmd += ["--dense-above", repr(float(dense_above))]
    cmd += list(extra_args)
    env = dict(os.environ)
    nv = _lib.nvrtc_path()
    if os.sep in nv:  # the command links NVRTC too: show it the one the package found
        env["LD_LIBRARY_PATH"] = os.path.dirname(nv) + (":" + env["LD_LIBRARY_PATH"]
                                                         if env.get("LD_LIBRARY_PATH") else "")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode == 0:
        # the command stored them from another process: the context would keep serving (model, layer)
        # thresholds it read before (a recalibration, silently the old taus, or the old variant accepted)
        ctx.thresholds_changed()
    if check and r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        cls = _core.NotFound if ("unknown command" in msg or "calibrate" in msg and "usage" in msg) else _core.SaleError
        raise cls("sale calibrate failed (exit %d): %s\n  command: %s" % (r.returncode, msg, " ".join(cmd)),
                  _lib.ERR_NOT_FOUND if cls is _core.NotFound else _lib.ERR_INVALID)
    # the command's warnings (e.g. one sample per layer) reach Python as warnings
    lines = r.stderr.splitlines()
    for i, line in enumerate(lines):
        # "sale: calibrate: warning: ..." (the command's) or "sale: warning: calibrate: ..." (the library's
        # log, e.g. a recalibration that drops an earlier calibration's thresholds)
        if "calibrate: warning:" in line or "warning: calibrate:" in line:
            text = [line.split("warning:", 1)[1].strip()]  # and its indented continuation lines
            if text[0].startswith("calibrate: "):
                text[0] = text[0][len("calibrate: "):]
            text += [x.strip() for x in itertools.takewhile(lambda x: x.startswith("  "), lines[i + 1:])]
            warnings.warn("sale calibrate: " + " ".join(text), UserWarning, stacklevel=2)
    return r.stdout
