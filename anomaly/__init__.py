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
    """A run stopped by a signal: SIGTERM (a scheduler's pre-emption or time limit) or SIGINT
    (Ctrl-C); `signum` is the signal's number.

    Not an Exception on purpose: a sweep must stop with it rather than go on to its next job.
    Entry points print the message as one line and exit with `exit_code`, 128 + the signal's
    number as a shell reports a process the signal ended: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, message: str = "", signum: int = 15, where: str | None = None) -> None:  # 15: SIGTERM
        super().__init__(message)
        self.signum = int(signum)
        self.where = where  # where it stopped ("after epoch 3"), for the code that says what is kept

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
