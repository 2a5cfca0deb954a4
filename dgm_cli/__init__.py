"""dgm: deep generative models on MNIST-sized images."""

__version__ = "0.1.0"
