"""gradleak: how much private data leaks from shared gradients and model updates."""

__version__ = "0.1.0"
