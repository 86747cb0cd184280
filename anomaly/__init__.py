"""anomaly: deep novelty and anomaly detection methods on published protocols.

The flow: dataset loader -> protocol -> datamodule -> method -> base module -> results.
"""

__version__ = "0.1.0"


class AnomalyError(ValueError):
    """A user-facing error: bad configuration, bad input data or an unusable checkpoint.

    Entry points print its message as one line and exit non-zero; the message must name the
    bad value and what is allowed.
    """


class RunInterrupted(BaseException):
    """A run stopped by a signal (SIGTERM: a scheduler's pre-emption or time limit).

    Not an Exception on purpose: a sweep must stop with it rather than go on to its next job.
    Entry points print the message as one line and exit with `exit_code` (128 + SIGTERM).
    """

    exit_code = 143
