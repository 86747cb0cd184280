"""Protocols: which images train, validate and test a method, and which of them are anomalies.

Each protocol is a pure function of (labels, settings, seed) returning index arrays; a small
`Protocol` class around it only resolves class names and carries config. Validation data always
comes from outside the test split: thresholds and model selection never see the test set.
`base.py` holds what they share (`Split`, `Protocol`, `resolve_classes`, the checks); each other
module is one protocol, its split function and its class (`gpnd_folds.py`: `gpnd_folds_split`,
`GPNDFolds`).

Adding a protocol = one module (here or anywhere importable) + one config in `conf/protocol/`
whose `_target_` names its class; nothing else lists the protocols. A new one needs no entry
below: these names only keep `anomaly.data.protocols.<Class>` working, the `_target_` that
configs and checkpoints written before the split into modules record.
"""

from anomaly.data.protocols.anomaly_ratio import AnomalyRatio
from anomaly.data.protocols.base import Protocol, Split, resolve_classes
from anomaly.data.protocols.coil_random import CoilRandom
from anomaly.data.protocols.contamination import Contamination
from anomaly.data.protocols.gpnd_folds import GPNDFolds
from anomaly.data.protocols.holdout_class import HoldoutClass
from anomaly.data.protocols.one_class import OneClass

__all__ = ["AnomalyRatio", "CoilRandom", "Contamination", "GPNDFolds", "HoldoutClass", "OneClass",
           "Protocol", "Split", "resolve_classes"]
