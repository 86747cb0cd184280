"""Data: loaders (datasets.py) -> protocols (protocols.py) -> batches (datamodule.py)."""

from anomaly.data.datasets import ImageSet
from anomaly.data.protocols import Split

__all__ = ["ImageSet", "Split"]
