"""Builds libsale and the `sale` command with CMake into build-py/, then copies
them into the package: sale/lib/libsale.so (RUNPATH $ORIGIN), sale/bin/sale
(RUNPATH $ORIGIN/../lib), and beside the library the shared libraries it needs
that a GPU host may lack (Lua, SQLite) — as auditwheel would, but not NVRTC,
the CUDA driver or glibc. The wheel is tagged py3-none-<platform>: ctypes only,
no CPython ABI."""
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))
BUNDLE = ("liblua5.4.so", "libsqlite3.so")  # prefixes of the ldd lines whose files travel in the wheel


def _ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    deps = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            deps[parts[0]] = parts[2]
    return deps


class BuildWithLibsale(build_py):
    def run(self):
        super().run()
        bdir = os.environ.get("SALE_PY_BUILD_DIR", os.path.join(ROOT, "build-py"))
        cuda = os.environ.get("CUDA_ROOT", "/usr/local/cuda")
        cfg = ["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release", "-DSALE_TESTS=OFF",
               "-DSALE_RPATH_ORIGIN=ON", "-DCUDA_ROOT=" + cuda]
        subprocess.run(cfg, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", bdir, "-j", jobs, "--target", "sale", "sale_cli"], check=True)
        pkg = os.path.join(self.build_lib, "sale")
        libdir, bindir = os.path.join(pkg, "lib"), os.path.join(pkg, "bin")
        os.makedirs(libdir, exist_ok=True)
        os.makedirs(bindir, exist_ok=True)
        so = os.path.join(libdir, "libsale.so")
        shutil.copy2(os.path.join(bdir, "libsale.so"), so)
        shutil.copy2(os.path.join(bdir, "sale"), os.path.join(bindir, "sale"))
        for soname, path in _ldd(so).items():
            if soname.startswith(BUNDLE):
                shutil.copy2(os.path.realpath(path), os.path.join(libdir, soname))
        missing = [b for b in BUNDLE if not any(f.startswith(b) for f in os.listdir(libdir))]
        if missing:
            sys.exit("setup.py: libsale.so does not link %s as expected (ldd)" % ", ".join(missing))


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        plat = os.environ.get("SALE_WHEEL_PLAT") or sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildWithLibsale, "bdist_wheel": PlatformWheel})
