"""`python -m benchmarks` (also `make bench`): where the published code is slow, how much
faster this framework is, measured as ratios in one process on the same inputs.

Each benchmark runs its baseline and ours on the same inputs (same weights, same seeds, same
batches), excludes a warm-up call of each, times both `repeats` times (interleaved, so load from
other work on the machine falls on both) and reports medians, their ratio against the target,
and whether both paths gave the same numbers (`--check`: exit 1 when a row misses; a row that
missed by its ratio alone is measured once more first, `--retries`):

1. GPND scoring: `GPND.score` (batched Jacobians, torch.func) vs the published loop (a backward
   pass per latent dimension with weight gradients, then a per-image NumPy / SciPy loop).
2. AnoGAN: the batched latent search vs one image at a time; f-AnoGAN's one-pass score vs
   AnoGAN's 500-step search.
3. Training throughput: one epoch of ae, GPND and ARAE (L∞ PGD) in the framework (Trainer.fit)
   vs a plain PyTorch loop over the same networks, batches and optimisers; GPND's published
   update loop vs ours (forward passes reused).
4. ARAE's union model: one training batch, published style vs ours.
5. Data path: one epoch of batches from the datamodule vs slicing a preloaded float tensor
   and vs torchvision's per-item PIL pipeline.
6. Scale: time and memory of one epoch at 1×, 2×, 4× the training set.

Inputs are synthetic MNIST-like images written in MNIST's real file format (no download).
Not part of the `anomaly` package (it does not ship in the wheel): run it from the repository
root, where `benchmarks` is importable. `--size quick` is the tiny size the tests use; `default` is `make bench` (minutes on 2 CPU
cores); `full` is the issue's sizes (1,024 GPND images, 64 images × 100 AnoGAN steps, …), meant
for a GPU or a patient CPU.
"""
