"""How often validation runs inside fit (`ValidationCadence`)."""

from __future__ import annotations

import math

import lightning as L

from anomaly import AnomalyError


class ValidationCadence(L.Callback):
    """Validation inside fit (the val/auroc learning curve) at the end of every k-th epoch, k the
    fewest epochs that hold `every_n_batches` training batches (and at least the trainer's
    `check_val_every_n_epoch`). Per-epoch validation of a 1,000-epoch schedule of 9-batch epochs
    cost more than the rest of the bookkeeping together; this keeps it a few percent of training
    on any device (a validation batch costs about what a training batch does, on a GPU as on a
    CPU). 1: every epoch. The threshold is fitted on validation after fit in any case, and
    validation never changes the training's numbers (it runs on a fork of the random generators,
    `anomaly.rng.ValidationRNG`)."""

    def __init__(self, every_n_batches: int = 200) -> None:
        if int(every_n_batches) < 1:
            raise AnomalyError(f"callbacks.validation_cadence.every_n_batches={every_n_batches}: need ≥ 1 "
                               "(1: every epoch)")
        self.every_n_batches = int(every_n_batches)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every = trainer.check_val_every_n_epoch
        batches = trainer.num_training_batches
        if every is None or not isinstance(batches, int) or batches < 1:  # a cadence in batches: as set
            return
        trainer.check_val_every_n_epoch = max(int(every), math.ceil(self.every_n_batches / batches))
