"""knnroute_core: the compiled exact-kNN routing core (C++17, SIMD, pybind11).

Import this module alone on production hot paths; it depends only on NumPy.
All array arguments are C-contiguous; float32 where documented (float64 or strided arrays are
rejected with ``TypeError`` rather than silently copied: convert once in the caller).
"""

from knnroute_core import _core
from knnroute_core._core import *  # noqa: F403
from knnroute_core._core import __version__  # pyproject.toml's version, compiled in by CMakeLists.txt

__all__ = ["__version__", *_core.__all__]
