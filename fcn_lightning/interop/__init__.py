"""Other tools' files: Caffe .caffemodel weights and pytorch-fcn (torchfcn) models."""
