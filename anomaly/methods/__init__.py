"""Methods: one file each, built on `AnomalyModule` (base.py)."""

from anomaly.methods.base import AnomalyModule

__all__ = ["AnomalyModule"]
