"""pytorch-fcn's model definitions for the tests (the loader lives in the package, where
`fcn_lightning.bench` uses it too)."""

from fcn_lightning.interop.torchfcn import torchfcn_models

__all__ = ["torchfcn_models"]
