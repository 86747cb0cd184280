"""4. ARAE's union model: one training batch (L2 PGD + L∞ PGD + the rotation/shift grid, then
the update on all three adversarial batches) in the published style vs ours.

The published-style batch: each PGD step calls `loss.backward()` on the model (so every step also
computes every weight gradient), and the spatial attack tries the transforms one at a time
(one `affine_grid` + `grid_sample` + encoder pass per transform, with autograd recording). Ours:
`ARAE.adversarial_examples` (input-only gradients with the weights frozen; the transforms in
chunks, one grid per transform shared by the batch, no gradients recorded). The maths is the
same, random starts included (same draws in the same order), so both give the same adversarial
batches and the same loss. The published code's attack-gradient leak into the training step is
not reproduced (the baseline zeroes gradients before its update, as ours never creates them).

This reconstruction is leaner than the published code: issue 8 measured the published union
training at 2.0 s per batch of 128 on this project's 2-core CPU (60 % of it the transform grid),
where this baseline takes about 1.2 s (its transform grid about half). Ours is at the matmul
floor (L2 and L∞ steps at ~140 GFLOP/s, the 279-transform search at ~150); counting FLOPs, no
exact implementation can be more than ~1.25× faster than this baseline's arithmetic, so the
in-process ratio understates the gain over the published code. A second row (CPU only) sets
ours against that quoted 2.0 s: the issue's target is stated against it.
"""

from __future__ import annotations

import math
import time
from functools import partial

import torch
import torch.nn.functional as F

from anomaly.methods.arae import ARAE, _project_l2
from anomaly.nets import DenseDecoder, DenseEncoder
from benchmarks.core import Case, Check, Goal, Timed, not_comparable, synchronize
from benchmarks.data import unit_images

PUBLISHED_UNION_BATCH_S = 2.0  # issue 8: the published union code, batch 128, 2 threads, this CPU
PUBLISHED_UNION_THREADS = 2
PUBLISHED_UNION_WHEN = "issue 8, quoted here 2026-11-26"


def make_model(size) -> ARAE:
    return ARAE([1, 28, 28], encoder=partial(DenseEncoder, activation="relu"),
                decoder=partial(DenseDecoder, activation="relu", output="none"), attack="union", union_combine="all",
                union_l2_steps=size.union_l2_steps, union_linf_steps=size.union_linf_steps,
                union_rotations=size.union_rotations, union_shifts=size.union_shifts)


def _latent_loss(encoder, x_adv: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (encoder(x_adv) - target).pow(2).flatten(1).sum(1).sum()


def published_l2(model: ARAE, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    eps, steps, alpha = model.union_l2
    x_adv = (x + _project_l2(torch.rand_like(x) - 0.5, eps)).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        model.zero_grad()
        _latent_loss(model.encoder, x_adv, target).backward()
        grad = x_adv.grad
        norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        stepped = x_adv.detach() + alpha * grad / (norm + 1e-10)
        x_adv = (x + _project_l2(stepped - x, eps)).clamp(0.0, 1.0)
    return x_adv.detach()


def published_linf(model: ARAE, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    eps, steps, alpha = model.union_linf
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        model.zero_grad()
        _latent_loss(model.encoder, x_adv, target).backward()
        stepped = x_adv.detach() + alpha * x_adv.grad.sign()
        x_adv = (x + (stepped - x).clamp(-eps, eps)).clamp(0.0, 1.0)
    return x_adv.detach()


def published_spatial(model: ARAE, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Every transform in turn on the whole batch, autograd on (the weights require gradients)."""
    thetas = model.union_transforms
    best = torch.full((len(x),), -math.inf, device=x.device)
    best_images = x.clone()
    for theta in thetas:
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=True)
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0.0, 1.0)
        shift = (model.encoder(moved) - target).pow(2).flatten(1).sum(1)
        better = shift > best
        best = torch.where(better, shift, best)
        best_images[better] = moved[better]
    return best_images.detach()


def training_update(model: ARAE, optimizer, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The union/all update of `ARAE.training_step` on the three adversarial batches."""
    x_target = x.repeat(3, 1, 1, 1)
    z_adv = model.encoder(x_adv)
    z_clean = model.encoder(x).repeat(3, 1)
    loss = F.mse_loss(model.decoder(z_adv), x_target) + model.union_latent_weight * F.mse_loss(z_adv, z_clean)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def published_batch(model: ARAE, optimizer, x: torch.Tensor):
    with torch.no_grad():
        target = model.encoder(x)
    by_l2 = published_l2(model, x, target)
    by_linf = published_linf(model, x, target)
    by_spatial = published_spatial(model, x, target)
    x_adv = torch.cat([by_l2, by_linf, by_spatial])
    return x_adv, training_update(model, optimizer, x, x_adv)


def our_batch(model: ARAE, optimizer, x: torch.Tensor):
    x_adv, _ = model.adversarial_examples(x)
    return x_adv, training_update(model, optimizer, x, x_adv)


def run(batch_fn, build, x: torch.Tensor, device) -> Timed:
    model = build()
    optimizer = model.configure_optimizers()
    torch.manual_seed(1)
    synchronize(device)
    start = time.perf_counter()
    x_adv, loss = batch_fn(model, optimizer, x)
    synchronize(device)
    seconds = time.perf_counter() - start
    return Timed((x_adv, loss), seconds)


def compare(a, b) -> Check:
    (adv_a, loss_a), (adv_b, loss_b) = a, b
    same = (adv_a - adv_b).abs().flatten(1).amax(1) <= 1e-5
    loss_diff = abs(float(loss_a) - float(loss_b)) / max(abs(float(loss_b)), 1e-30)
    ok = bool(same.float().mean() >= 0.99) and loss_diff <= 1e-4
    return Check(ok, f"{int(same.sum())}/{len(same)} adversarial images equal, loss rel diff "
                     f"{loss_diff:.1e} (≤ 1e-4)")


def cases(size, device) -> list[Case]:
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in make_model(size).state_dict().items()}

    def build() -> ARAE:
        model = make_model(size).to(device).train()
        model.load_state_dict(init)
        return model

    x = unit_images(size.union_batch, 28, seed=4).to(device)
    probe = make_model(size)
    settings = (f"L2 {probe.union_l2[1]} steps + L∞ {probe.union_linf[1]} steps + "
                f"{len(probe.union_transforms)} rotations × shifts")
    quoted = []
    published_settings = (len(x), probe.union_l2[1], probe.union_linf[1], len(probe.union_transforms))
    if torch.device(device).type == "cpu" and published_settings == (128, 100, 40, 279):
        quoted = [Case(
            bench="4", what=f"ARAE union, one training batch of {len(x)} ({settings})",
            baseline_label=f"the published code, {PUBLISHED_UNION_BATCH_S:g} s per batch as measured on this "
                           f"2-core CPU at {PUBLISHED_UNION_THREADS} threads ({PUBLISHED_UNION_WHEN}; quoted, "
                           "not re-run)",
            ours_label="ours", baseline=None, ours=lambda: run(our_batch, build, x, device),
            compare=not_comparable("a quoted time: the published code is not here"),
            goal=Goal("speedup", 2.0), quoted_baseline_s=PUBLISHED_UNION_BATCH_S,
            quoted_threads=PUBLISHED_UNION_THREADS, quoted_when=PUBLISHED_UNION_WHEN, only_where_judged=True)]
    return [Case(
        bench="4", what=f"ARAE union, one training batch of {len(x)} (28×28 MLP; {settings})",
        baseline_label="published style (backward into the weights per PGD step, one grid_sample per transform)",
        ours_label="ours (input-only gradients, transforms batched, no autograd in the search)",
        baseline=lambda: run(published_batch, build, x, device),
        ours=lambda: run(our_batch, build, x, device),
        compare=compare, goal=Goal("speedup") if quoted else Goal("speedup", 2.0),
        note="on this CPU exact maths allows ≤ 1.25× fewer FLOPs than this lean baseline; the 2× "
             "target is against the published code, next row" if quoted else "")] + quoted
