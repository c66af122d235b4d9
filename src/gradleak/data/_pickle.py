"""Reading the CIFAR python pickles without letting a file run arbitrary code."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from gradleak.core.errors import GradleakError

# A CIFAR batch needs only what numpy uses to rebuild an array (and, for files written
# by Python 3 with protocol < 3, codecs.encode for raw bytes). Anything else in a pickle
# would be a way to execute code, so it is refused.
_NUMPY_INTERNALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}
_PLAIN_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def _numpy_internal(submodule: str, name: str) -> Any:
    # Files from numpy 1 name numpy.core, files from numpy 2 name numpy._core; resolve
    # both to whichever this numpy provides, avoiding its deprecation shim.
    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ModuleNotFoundError:
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_INTERNALS:
            return _numpy_internal(*_NUMPY_INTERNALS[(module, name)])
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle_dict(path: Path) -> dict[Any, Any]:
    """Load a Python-2 era pickle holding a dict (keys stay bytes)."""
    try:
        with path.open("rb") as f:
            # encoding="bytes": the official files were written by Python 2, whose str
            # keys and names arrive as bytes.
            obj = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise GradleakError(f"could not read {path}: {e.strerror or e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise GradleakError(
            f"{path} is not a valid CIFAR pickle ({e}); replace it with the file "
            "from the official python archive"
        ) from e
    if not isinstance(obj, dict):
        raise GradleakError(
            f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR batch; "
            "replace it with the file from the official python archive"
        )
    return obj
