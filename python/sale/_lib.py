# _lib.py — ctypes over include/sale.h: finds NVRTC, loads libsale, declares
# the prototypes. THE STRUCTURES BELOW MIRROR sale.h FIELD BY FIELD: when a
# field is added to a struct in sale.h, add it here in the same place
# (python/tests/test_abi.py compiles sale.h and checks every size and offset;
# load() also refuses a libsale whose sale_attention_args has another size).
import ctypes
import ctypes.util
import glob
import os
import sys
import threading
from ctypes import (POINTER, c_char, c_char_p, c_double, c_float, c_int, c_int64, c_size_t, c_uint, c_uint16,
                    c_uint32, c_uint64, c_void_p)

# sale_status
OK, ERR_INVALID, ERR_UNSUPPORTED, ERR_COMPILE, ERR_CACHE, ERR_NO_DEVICE, ERR_CUDA, ERR_NOMEM, ERR_IO, \
    ERR_NOT_FOUND, ERR_LUA = range(11)
STATUS_NAMES = ["SALE_OK", "SALE_ERR_INVALID", "SALE_ERR_UNSUPPORTED", "SALE_ERR_COMPILE", "SALE_ERR_CACHE",
                "SALE_ERR_NO_DEVICE", "SALE_ERR_CUDA", "SALE_ERR_NOMEM", "SALE_ERR_IO", "SALE_ERR_NOT_FOUND",
                "SALE_ERR_LUA"]
DTYPE_F16, DTYPE_BF16, DTYPE_F32 = 0, 1, 2
MODE_FUSED, MODE_TWO_PASS, MODE_DENSE, MODE_PLAIN, MODE_AUTO = 0, 1, 2, 3, 4
THR_OPEN, THR_RUN, THR_FIXED = 0, 1, 2  # sale_key.thr / sale_attention_args.thr (SALE_THR_*)
THRS = {"run": THR_RUN, "fixed": THR_FIXED}
FAMILIES = ["quantize", "fused", "select", "attend", "dense", "plain"]


class Key(ctypes.Structure):  # sale_key
    _fields_ = [("family", c_int), ("head_dim", c_int), ("block_q", c_int), ("block_k", c_int),
                ("block_seg", c_int), ("local_window", c_int), ("dtype", c_int), ("est_bits", c_int),
                ("causal", c_int), ("warps", c_int), ("stages", c_int), ("arch", c_int), ("thr", c_int)]


LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class Options(ctypes.Structure):  # sale_options
    _fields_ = [("cache_path", c_char_p), ("fleet_path", c_char_p), ("log", LOG_FN), ("log_user", c_void_p),
                ("tune_on_miss", c_int), ("existing_only", c_int)]


class KernelInfo(ctypes.Structure):  # sale_kernel_info
    _fields_ = [("key", c_char * 256), ("arch", c_char * 16), ("entry", c_char * 64), ("registers", c_int),
                ("smem_static", c_int), ("smem_dynamic", c_int), ("spill_stores", c_int), ("spill_loads", c_int),
                ("stack", c_int), ("threads", c_int), ("compile_ms", c_double), ("cubin_bytes", c_size_t),
                ("from_cache", c_int), ("src_hash", c_uint64)]


class Stats(ctypes.Structure):  # sale_stats
    _fields_ = [("kept_blocks", c_int64), ("causal_blocks", c_int64), ("density", c_double),
                ("dense_fallback", c_int), ("density_per_head", POINTER(c_double))]


class AttentionArgs(ctypes.Structure):  # sale_attention_args
    _fields_ = [("batch", c_int), ("heads_q", c_int), ("heads_kv", c_int), ("seq_len", c_int), ("head_dim", c_int),
                ("dtype", c_int),
                ("q", c_void_p), ("k", c_void_p), ("v", c_void_p), ("out", c_void_p),
                ("q_stride", c_int64 * 3), ("k_stride", c_int64 * 3), ("v_stride", c_int64 * 3),
                ("o_stride", c_int64 * 3),
                ("scale", c_float), ("tau", POINTER(c_float)), ("tau_default", c_float),
                ("block_q", c_int), ("block_k", c_int), ("block_seg", c_int), ("local_window", c_int),
                ("est_bits", c_int),
                ("mode", c_int), ("dense_below", c_int), ("lse", c_void_p), ("mask", c_void_p),
                ("stats", POINTER(Stats)), ("workspace", c_void_p), ("workspace_bytes", c_size_t),
                ("phase_ms", POINTER(c_float)), ("tile_warps", c_int), ("tile_stages", c_int),
                ("model", c_char_p), ("layer", c_int), ("thr", c_int)]


class ThresholdMeta(ctypes.Structure):  # sale_threshold_meta
    _fields_ = [("budget", c_double), ("budget_abs", c_int), ("samples", c_int), ("created", c_int64),
                ("density", c_double), ("error", c_double), ("thr", c_int)]


class DeviceInfo(ctypes.Structure):  # sale_device_info
    _fields_ = [("ordinal", c_int), ("name", c_char * 128), ("arch", c_int), ("sm_count", c_int),
                ("driver_version", c_int), ("total_mem", c_size_t), ("smem_optin", c_int)]


STRUCTS = {"sale_key": Key, "sale_options": Options, "sale_kernel_info": KernelInfo, "sale_stats": Stats,
           "sale_attention_args": AttentionArgs, "sale_threshold_meta": ThresholdMeta,
           "sale_device_info": DeviceInfo}

_P = c_void_p
_PROTOS = {
    "sale_status_name": (c_char_p, [c_int]),
    "sale_key_default": (Key, [c_int]),
    "sale_key_format": (c_int, [POINTER(Key), c_char_p, c_size_t]),
    "sale_key_parse": (c_int, [c_char_p, POINTER(Key), c_char_p, c_size_t]),
    "sale_key_validate": (c_int, [POINTER(Key), c_char_p, c_size_t]),
    "sale_key_resolve": (c_int, [POINTER(Key), c_char_p, c_size_t]),
    "sale_key_run_set": (c_int, [POINTER(Key), POINTER(Key), c_char_p, c_size_t]),
    "sale_key_hash": (c_uint64, [POINTER(Key)]),
    "sale_arch_name": (c_char_p, [c_int]),
    "sale_arch_parse": (c_int, [c_char_p]),
    "sale_create": (c_int, [POINTER(_P), POINTER(Options)]),
    "sale_destroy": (None, [_P]),
    "sale_last_error": (c_char_p, [_P]),
    "sale_cache_path": (c_char_p, [_P]),
    "sale_compile": (c_int, [_P, POINTER(Key), POINTER(KernelInfo)]),
    "sale_get_kernel": (c_int, [_P, POINTER(Key), POINTER(_P)]),
    "sale_kernel_get_info": (c_int, [_P, POINTER(KernelInfo)]),
    "sale_attention_args_init": (None, [_P]),
    "sale_num_qblocks": (c_int, [POINTER(AttentionArgs)]),
    "sale_num_kblocks": (c_int, [POINTER(AttentionArgs)]),
    "sale_attention_workspace_size": (c_int, [_P, POINTER(AttentionArgs), POINTER(c_size_t)]),
    "sale_attention": (c_int, [_P, POINTER(AttentionArgs), _P]),
    "sale_reference_attention": (c_int, [_P, POINTER(AttentionArgs)]),
    "sale_thresholds_put": (c_int, [_P, c_char_p, c_int, POINTER(c_float), c_int, POINTER(ThresholdMeta)]),
    "sale_thresholds_get": (c_int, [_P, c_char_p, c_int, POINTER(c_float), c_int, POINTER(ThresholdMeta)]),
    "sale_device_count": (c_int, [_P, POINTER(c_int)]),
    "sale_device_info_get": (c_int, [_P, c_int, POINTER(DeviceInfo)]),
    "sale_nvrtc_version": (c_int, [POINTER(c_int)]),
    "sale_thresholds_reload": (c_int, [_P]),
}

_OPTIONAL = {"sale_thresholds_put", "sale_thresholds_get", "sale_thresholds_reload"}

_HERE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_lib = None
_nvrtc_path = None


class LoadError(ImportError):
    """libsale or a library it needs (NVRTC) could not be loaded."""


def _nvrtc_candidates():
    # Explicit choice first, then the system's dynamic linker (LD_LIBRARY_PATH,
    # ld.so.cache), then the usual CUDA toolkit folders, then the NVRTC that
    # pip's CUDA packages (a dependency of torch) put in site-packages.
    env = os.environ.get("SALE_NVRTC")
    if env:
        yield env
    yield "libnvrtc.so.13"
    roots = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT")]
    roots += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-13*"), reverse=True)
    for r in roots:
        if r:
            for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
                yield os.path.join(r, sub, "libnvrtc.so.13")
    for p in sys.path:
        for pat in ("nvidia/cu13/lib/libnvrtc.so.13", "nvidia/cuda_nvrtc/lib/libnvrtc.so.13",
                    "nvidia/nvrtc/lib/libnvrtc.so.13"):
            yield from sorted(glob.glob(os.path.join(p, pat)))


def _load_nvrtc():
    tried = []
    for cand in _nvrtc_candidates():
        if os.sep in cand and not os.path.exists(cand):
            continue
        try:
            lib = ctypes.CDLL(cand, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            tried.append("%s (%s)" % (cand, e))
            continue
        return cand, lib
    raise LoadError("sale: cannot load NVRTC (libnvrtc.so.13), which compiles sale's kernels. Install the CUDA "
                    "13 toolkit (or its NVRTC), then put its lib64 folder on LD_LIBRARY_PATH or set SALE_NVRTC to "
                    "the file. Tried: " + "; ".join(tried[:4]))


def _libsale_path():
    env = os.environ.get("SALE_LIBRARY")
    if env:
        return env
    for p in (os.path.join(_HERE, "lib", "libsale.so"),
              os.path.join(_HERE, "..", "..", "build", "libsale.so")):  # a source checkout after setup.sh
        if os.path.exists(p):
            return os.path.abspath(p)
    raise LoadError("sale: libsale.so not found beside the package (%s/lib) nor in the checkout's build/: "
                    "install the wheel, or run scripts/setup.sh, or set SALE_LIBRARY" % _HERE)


def args_size_of_library(lib):
    """sizeof(sale_attention_args) as the library sees it: sale_attention_args_init
    memsets the whole struct, so fill a large buffer with 0xff and see how far the
    zeros reach (the tail of the struct may be padding, also zeroed by memset)."""
    buf = (ctypes.c_ubyte * 4096)(*([0xFF] * 4096))
    lib.sale_attention_args_init(ctypes.cast(buf, c_void_p))
    last = max(i for i in range(4096) if buf[i] != 0xFF)
    return last + 1


def load():
    """The loaded libsale (ctypes.CDLL with prototypes), loaded once."""
    global _lib, _nvrtc_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        _nvrtc_path, _ = _load_nvrtc()
        path = _libsale_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise LoadError("sale: cannot load %s: %s" % (path, e)) from None
        for name, (res, argt) in _PROTOS.items():
            try:
                f = getattr(lib, name)
            except AttributeError:
                if name in _OPTIONAL:  # declared in sale.h, not in every build yet
                    continue
                raise LoadError("sale: %s lacks %s: the library is older than this package" % (path, name))
            f.restype = res
            f.argtypes = argt
        n = args_size_of_library(lib)
        if n != ctypes.sizeof(AttentionArgs):
            raise LoadError("sale: %s has a sale_attention_args of %d bytes, the Python mirror in %s has %d: the "
                            "package and the library are from different versions of sale.h" %
                            (path, n, __file__, ctypes.sizeof(AttentionArgs)))
        _lib = lib
        return lib


def library_path():
    load()
    return _libsale_path()


def nvrtc_path():
    load()
    return _nvrtc_path


def cli_path():
    """The `sale` command: the wheel's sale/bin/sale, else the checkout's build/sale, else $SALE_CLI."""
    env = os.environ.get("SALE_CLI")
    if env:
        return env
    for p in (os.path.join(_HERE, "bin", "sale"), os.path.join(_HERE, "..", "..", "build", "sale")):
        if os.path.exists(p):
            return os.path.abspath(p)
    return None


__all__ = ["load", "Key", "Options", "KernelInfo", "Stats", "AttentionArgs", "ThresholdMeta", "DeviceInfo",
           "STRUCTS", "LoadError", "cli_path", "c_float", "c_int", "c_size_t", "c_uint", "c_uint16", "c_uint32"]
