# The ctypes structures in sale/_lib.py mirror sale.h: compile a C program that
# prints sizeof and every offsetof, and compare with ctypes field by field.
import ctypes
import json
import os
import shutil
import subprocess

import pytest

from sale import _lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def c_layout(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists(os.path.join(ROOT, "include", "sale.h")):
        pytest.skip("needs a C compiler and the checkout's include/sale.h")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "sale.h"', "int main(void) {", 'printf("{");']
    first = True
    for cname, st in _lib.STRUCTS.items():
        fields = ",".join('\\"%s\\":%%zu' % f for f, _ in st._fields_)
        args = ", ".join("offsetof(%s, %s)" % (cname, f) for f, _ in st._fields_)
        lines.append('printf("%s\\"%s\\":{\\"size\\":%%zu,%s}", sizeof(%s), %s);'
                     % ("" if first else ",", cname, fields, cname, args))
        first = False
    lines += ['printf("}\\n");', "return 0; }"]
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)], check=True)
    return json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)


def test_ctypes_structs_match_sale_h(tmp_path):
    c = c_layout(tmp_path)
    for cname, st in _lib.STRUCTS.items():
        assert c[cname]["size"] == ctypes.sizeof(st), "%s: sizeof %d in C, %d in ctypes" % (
            cname, c[cname]["size"], ctypes.sizeof(st))
        for f, _ in st._fields_:
            assert c[cname][f] == getattr(st, f).offset, "%s.%s: offset %d in C, %d in ctypes" % (
                cname, f, c[cname][f], getattr(st, f).offset)


def test_loaded_library_agrees_on_the_args_size():
    lib = _lib.load()
    assert _lib.args_size_of_library(lib) == ctypes.sizeof(_lib.AttentionArgs)


def _c_fields(text, cname):
    """Member names of `typedef struct cname { ... } cname;` in sale.h, in order."""
    import re
    m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (cname, cname), text, re.S)
    assert m, "%s not found in sale.h" % cname
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    names = []
    for decl in body.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        parts = decl.split(",")
        first = re.sub(r"\[.*?\]", "", parts[0]).split()[-1].lstrip("*")
        names.append(first)
        names += [re.sub(r"\[.*?\]", "", p).strip().lstrip("*") for p in parts[1:]]
    return names


def test_ctypes_structs_have_every_field_of_sale_h():
    """Sizes and offsets miss a field added in padding (after sale_device_info's
    smem_optin, sale_threshold_meta's thr, before sale_stats' pointer): compare the
    member names too."""
    path = os.path.join(ROOT, "include", "sale.h")
    if not os.path.exists(path):
        pytest.skip("needs the checkout's include/sale.h")
    text = open(path).read()
    for cname, st in _lib.STRUCTS.items():
        assert _c_fields(text, cname) == [f for f, _ in st._fields_], cname


def test_enum_values_match_sale_h(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists(os.path.join(ROOT, "include", "sale.h")):
        pytest.skip("needs a C compiler and the checkout's include/sale.h")
    names = {"SALE_%s" % n: getattr(_lib, n) for n in ("OK", "ERR_INVALID", "ERR_UNSUPPORTED", "ERR_COMPILE",
                                                         "ERR_CACHE", "ERR_NO_DEVICE", "ERR_CUDA", "ERR_NOMEM",
                                                         "ERR_IO", "ERR_NOT_FOUND", "ERR_LUA", "DTYPE_F16",
                                                         "DTYPE_BF16", "DTYPE_F32", "MODE_FUSED", "MODE_TWO_PASS",
                                                         "MODE_DENSE", "MODE_PLAIN", "MODE_AUTO", "THR_OPEN",
                                                         "THR_RUN", "THR_FIXED")}
    src = tmp_path / "enums.c"
    src.write_text('#include <stdio.h>\n#include "sale.h"\nint main(void) {\n' +
                   "".join('printf("%%d\\n", (int)%s);\n' % n for n in names) + "return 0; }\n")
    exe = tmp_path / "enums"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)], check=True)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    assert dict(zip(names, got)) == names
    assert _lib.STATUS_NAMES == [n for n in names if n.startswith("SALE_OK") or n.startswith("SALE_ERR_")]
