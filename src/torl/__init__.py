"""torl: tool-integrated reinforcement learning for language models (ToRL, arXiv 2503.23383)."""

__version__ = "0.1.0"
