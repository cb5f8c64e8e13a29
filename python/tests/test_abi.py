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
