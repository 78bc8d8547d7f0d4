"""The error of a dataset file that cannot be used (pure Python)."""
from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """Invalid dataset content (a malformed annotation, mask or list file); the message names
    the file and says how to fix it. The data stage reports it as one line."""
