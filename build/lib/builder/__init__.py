"""pytorch-cuda-images: PyTorch + CUDA container images from a version matrix."""

__version__ = "0.1.0"
