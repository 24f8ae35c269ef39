"""Reading a user's pickle file without running code from it: a restricted unpickler.

A pickle is a small program: its REDUCE instruction calls whatever importable callable the file
names (`os.system`, `builtins.exec`, ...), so `pickle.load` on a downloaded file runs the
downloader's code. `load_restricted` resolves every global the file names through an explicit
table and refuses all others (and persistent ids) with `UnsafePickleError` BEFORE anything is
called. Without globals a pickle can only build plain containers and scalars (dict, list, tuple,
str, bytes, int, float, bool, None, set).

`NUMPY_ARRAY_GLOBALS` admits what a pickled numpy array needs, and nothing that can run code:
  numpy(._)core.multiarray._reconstruct  only to make a plain `numpy.ndarray`
  numpy.ndarray                          the class `_reconstruct` is given
  numpy.dtype                            dtypes without Python objects inside
  _codecs.encode                         latin-1 only: Python 3 writes `bytes` at protocol <= 2
                                         as `_codecs.encode(text, "latin1")`
Arrays come back through numpy's own `__setstate__`, which copies raw bytes; object arrays are
refused because their items would be unpickled as objects.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping, Tuple

import numpy as np

# The function numpy pickles arrays with (numpy.core or numpy._core, by version).
_numpy_reconstruct = np.empty(0).__reduce__()[0]

__all__ = ["UnsafePickleError", "UnreadablePickleError", "NUMPY_ARRAY_GLOBALS",
           "load_restricted"]


class UnsafePickleError(ValueError):
    """The file names a global outside the allowed table (it would run code): nothing ran."""


class UnreadablePickleError(ValueError):
    """The file is not a complete pickle (truncated, corrupt, or not a pickle at all)."""


def _plain_array(subtype, shape, typecode) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"array subclass {subtype!r} is not allowed")
    return _numpy_reconstruct(np.ndarray, shape, typecode)


def _plain_dtype(*args) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"arrays of Python objects (dtype {dtype}) are not allowed")
    return dtype


def _latin1_encode(text, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with '{encoding}' is not allowed (latin-1 only)")
    return codecs.encode(text, "latin-1", errors)


NUMPY_ARRAY_GLOBALS: Mapping[Tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _plain_array,   # written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _plain_array,  # written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


def load_restricted(path: str | Path, allowed: Mapping[Tuple[str, str], Callable],
                    encoding: str = "latin1", what: str = "pickle") -> Any:
    """The object pickled in `path`, admitting only the globals in `allowed`.

    `encoding` decodes Python 2 `str` objects, as in `pickle.load`. Raises UnsafePickleError
    naming the file and the refused global, and UnreadablePickleError for a file that cannot be
    unpickled (truncated, corrupt, not a pickle); both are ValueErrors whose message starts with
    `path`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            return _Unpickler(stream, allowed, encoding=encoding).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: refused to unpickle it: {err}; a {what} holds no "
                                "such object, so the file is not one (nothing in it was run)"
                                ) from None
    except (OSError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - any unpickler failure: the file is unreadable
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UnreadablePickleError(f"{path}: cannot unpickle it ({reason}): the file is "
                                    "truncated or corrupt; download or extract it again"
                                    ) from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, allowed: Mapping[Tuple[str, str], Callable], **kwargs):
        super().__init__(stream, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise UnsafePickleError(f"it names '{module}.{name}'")
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError(f"it refers to an external object (persistent id {pid!r})")
