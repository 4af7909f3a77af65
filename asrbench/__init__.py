"""asrbench: train, decode and compare speech-recognition architectures side by side."""

__version__ = "0.1.0"
