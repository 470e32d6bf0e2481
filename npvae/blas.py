"""The thread count of NumPy's BLAS, read and set while the process runs.

``npvae.fast.TwoThreadStep`` runs two threads of its own, each of whose matrix products must then
use one BLAS thread: a two-threaded OpenBLAS called from two threads at once gives results that
vary from call to call in their last bits, and oversubscribes the cores.  NumPy's wheels bundle
OpenBLAS, whose ``openblas_set_num_threads`` takes effect at once; it is found among the process's
loaded libraries (Linux: /proc/self/maps) by its exported names.  Where it is not found (another
BLAS, another system) ``available()`` is False and the two-thread step is not used.
"""
import ctypes
import importlib
import re
from contextlib import contextmanager

_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
          ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
          ("openblas_set_num_threads", "openblas_get_num_threads"))
_functions = []          # [(set, get)] once looked for; empty list inside: not found


def _lookup():
    if _functions:
        return _functions[0]
    importlib.import_module("numpy")     # NumPy loads its BLAS on import: it must be in the process to be found
    found = None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
    except OSError:
        paths = []
    paths.sort(key=lambda p: "numpy" not in p)          # NumPy's own copy first (SciPy bundles another)
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.restype, getter.restype = None, ctypes.c_int
                setter.argtypes, getter.argtypes = [ctypes.c_int], []
                found = (setter, getter)
                break
        if found:
            break
    _functions.append(found)
    return found


def available():
    """Whether NumPy's BLAS thread count can be read and set here."""
    return _lookup() is not None


def get_threads():
    """NumPy's BLAS thread count, or None when it cannot be read."""
    f = _lookup()
    return None if f is None else int(f[1]())


@contextmanager
def threads(n):
    """Run the block with n BLAS threads, then restore the count (a no-op where it cannot be set)."""
    f = _lookup()
    if f is None:
        yield
        return
    before = int(f[1]())
    try:
        if before != n:
            f[0](int(n))
        yield
    finally:
        if before != n:
            f[0](before)
