"""Building and locating the C++ kernel libraries behind ``ops.Custom(func_type="aot")`` on CPU.

A library is compiled once per source version, compiler flags and CPU (the file name carries a
hash of all three, so a cache shared between machines never hands one CPU another's build),
written under a temporary name and renamed into place: an interrupted or concurrent build never
leaves a file that looks complete. Without a C++ compiler, or if the build fails, `load_library`
returns None with one warning and callers fall back to MindSpore's own operators.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings

import mindspore as ms

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
# Set to 0 to run MindSpore's own operators everywhere (for comparisons or a broken toolchain).
ENV_SWITCH = "MS_ZOO_CPU_KERNELS"
# Cleared by `standard_operators()`, while building networks to export.
_cells_may_use_kernels = True


@contextlib.contextmanager
def standard_operators():
    """Cells built inside this block use MindSpore's own operators only: an exported MINDIR or
    ONNX graph must not reference a library that exists only on this machine."""
    global _cells_may_use_kernels
    previous, _cells_may_use_kernels = _cells_may_use_kernels, False
    try:
        yield
    finally:
        _cells_may_use_kernels = previous


def kernels_allowed() -> bool:
    """Whether a cell being built now may use the CPU kernels: on CPU, outside `standard_operators()`."""
    return _cells_may_use_kernels and ms.get_context("device_target") == "CPU"


def library_for_cell(name: str) -> str | None:
    """The kernel library a cell being built now should use, or None for the standard operators:
    when `kernels_allowed()` and the library builds."""
    return load_library(name) if kernels_allowed() else None


def cache_dir() -> str:
    """Where compiled kernels go: $MS_ZOO_KERNEL_CACHE, else ~/.cache/ms_zoo_kernels."""
    return os.environ.get("MS_ZOO_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ms_zoo_kernels")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def vector_kernels() -> bool:
    """Whether the kernels are built with AVX2 and FMA (where the CPU has them). Kernels written
    only for them (e.g. the 1x1 convolution) are not used otherwise."""
    return {"avx2", "fma"} <= _cpu_flags()


def compile_command(source: str, output: str) -> list[str]:
    """g++ command for one kernel source; AVX2/FMA code only where the CPU has them."""
    isa = ["-mavx2", "-mfma"] if vector_kernels() else []
    # -fopenmp-simd: only the `omp simd` hints (vectorised reductions), no OpenMP runtime.
    # -z nodelete: MindSpore unloads a library when the last graph using it is freed, but the
    # worker threads of common.h's pool run code of the library that started them, shared by
    # all the libraries (a later kernel of another library woke them into unmapped code).
    return ["g++", "-O3", "-std=c++14", "-fopenmp-simd", "-pthread", "-shared", "-fPIC", "-Wl,-z,nodelete", *isa,
            source, "-o", output]


def enabled() -> bool:
    """Whether custom CPU kernels may be used (the environment switch)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def load_library(name: str) -> str | None:
    """Path of the compiled library for ``kernels/<name>.cc``, building it if needed; None when
    it cannot be built or MindSpore would not load it (a warning says why). Allow-lists the
    cache folder for MindSpore when nothing else is."""
    if not enabled():
        return None
    source = os.path.join(KERNEL_DIR, f"{name}.cc")
    code = b""
    # The source and every shared header: a header change must rebuild the library too.
    for path in [source] + sorted(glob.glob(os.path.join(KERNEL_DIR, "*.h"))):
        with open(path, "rb") as f:
            code += f.read()
    folder = cache_dir()
    # MindSpore loads aot libraries only from inside this one folder (it takes a single path);
    # checked before building, since a library it would refuse is not worth compiling.
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed and not _is_inside(folder, allowed):
        warnings.warn(f"MS_CUSTOM_AOT_WHITE_LIST={allowed} does not contain the kernel cache {folder}; "
                      "set MS_ZOO_KERNEL_CACHE to a folder inside it to use the CPU kernels. Using "
                      "MindSpore's own (slower) operators instead", RuntimeWarning, stacklevel=2)
        return None
    key = hashlib.sha256(code + " ".join(compile_command("src", "out")).encode()).hexdigest()[:16]
    target = os.path.join(folder, f"{name}-{key}.so")
    if not os.path.isfile(target):
        try:
            _build(source, target)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            warnings.warn(f"could not build the CPU kernel {source} ({str(detail).strip()[:500]}); "
                          "using MindSpore's own (slower) operators instead", RuntimeWarning, stacklevel=2)
            return None
    if not allowed:
        os.environ["MS_CUSTOM_AOT_WHITE_LIST"] = folder
    return target


def _is_inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _build(source: str, target: str) -> None:
    if shutil.which("g++") is None:
        raise OSError("no g++ on PATH")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=os.path.dirname(target))
    os.close(fd)
    try:
        subprocess.run(compile_command(source, tmp), check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
