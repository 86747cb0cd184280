"""anomaly: deep novelty and anomaly detection methods on published protocols.

The flow: dataset loader -> protocol -> datamodule -> method -> base module -> results.
"""

__version__ = "0.1.0"


class AnomalyError(ValueError):
    """A user-facing error: bad configuration, bad input data or an unusable checkpoint.

    Entry points print its message as one line and exit non-zero; the message must name the
    bad value and what is allowed.
    """
