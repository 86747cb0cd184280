"""Data: loaders (datasets.py, their file I/O in io.py) -> protocols (protocols/) -> batches
(datamodule.py)."""

from anomaly.data.datasets import ImageSet
from anomaly.data.protocols.base import Split

__all__ = ["ImageSet", "Split"]
