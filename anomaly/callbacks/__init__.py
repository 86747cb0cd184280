"""Lightning callbacks for unattended runs (`conf/callbacks/default.yaml`), one module each job.

- `non_finite.StopOnNonFiniteLoss`: ends training at the first batch whose loss, or any value
  logged under `train/`, or any weight is NaN or infinite, with an `AnomalyError` naming the
  method, the epoch, batch and global step, and the loss terms (or the networks whose weights
  overflowed). It works from what every method already does (return its loss or
  `self.log("train/…")` its terms), so GANs with manual optimisation are covered without code of
  their own. A diverged network never recovers; training on would only waste the job's time and
  then score with NaN weights.
- `anomaly.rng.ResumableRNG` (with the rest of the random generators' handling): the
  generators' states in every checkpoint, back when training resumes from one.
- The bookkeeping around the steps, on a cadence so that it stays a few percent of training
  (GPU steps take milliseconds): `epoch_end.EpochEndCheckpoint` (at most every few minutes),
  `validation_cadence.ValidationCadence` (about every 200 batches), `progress.ProgressBar` (its
  numbers read once a second).
- `epoch_end.StopAtEpochEnd`: SIGTERM or SIGINT (Ctrl-C) during training finishes the epoch in
  progress, writes its epoch-end checkpoint and ends the run (`RunInterrupted`, saying what is
  kept); a second signal ends it at once (outside training: `anomaly.stop_signals.stop_at_once`).

No callback reads a device value on the host in a training step: on a GPU such a read waits for
every queued kernel (tests/helpers/syncs.py counts them).
"""
