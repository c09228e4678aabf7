"""fcn-lightning: Fully Convolutional Networks reproduced with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
