"""nnresearch: every claim of an introductory neural-networks chapter as a re-runnable experiment."""

__version__ = "0.1.0"
