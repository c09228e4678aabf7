"""pytorch-fcn's model definitions, imported without its package side effects.

torchfcn's ``__init__`` pulls its trainer and datasets (pytz, scikit-image, ...), and its
model files import the ``fcn`` package, which needs chainer, only to download weights. The
model classes themselves need neither, so the tests load ``torchfcn.models`` alone with an
empty stand-in for ``fcn``. `make install` installs torchfcn without its dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path


def torchfcn_models() -> types.ModuleType:
    if "torchfcn.models" in sys.modules:
        return sys.modules["torchfcn.models"]
    spec = importlib.util.find_spec("torchfcn")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(
            "torchfcn is not installed: run `make install` "
            "(or `pip install --no-deps torchfcn==1.9.7`)"
        )
    sys.modules.setdefault("fcn", types.ModuleType("fcn"))
    package = types.ModuleType("torchfcn")
    package.__path__ = [str(Path(p)) for p in spec.submodule_search_locations]
    sys.modules["torchfcn"] = package
    return importlib.import_module("torchfcn.models")
