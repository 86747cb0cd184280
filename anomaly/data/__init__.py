"""Data: loaders (datasets.py, their file I/O in io.py, what they return in image_set.py) ->
protocols (protocols/) -> batches (datamodule.py)."""

from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Split

__all__ = ["ImageSet", "Split"]
