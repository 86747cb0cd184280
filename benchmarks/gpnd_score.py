"""1. GPND scoring: batched Jacobians (torch.func, `GPND.score`) vs the published loop.

The published scoring (novelty_detector.py) takes a batch with `requires_grad` inputs, runs
E and G, builds J = dz/dx with one backward pass per latent dimension over the batch
(`compute_jacobian`: `output.backward(one_hot, retain_graph=True)`, so every pass also computes
the encoder's weight gradients), then loops over the images in NumPy / SciPy: an SVD per image,
`gennorm` per latent dimension, the residual density. The baseline below is that structure,
computing this framework's score (the encoder route, `jacobian=encoder`, whose sign is
+Σ log σ(J_E); the floors and the isotropic p(w⊥) as `GPND.log_density_terms`), so that the two
paths must give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from anomaly.methods.gpnd import GPND, LOG_DENSITY_FLOOR
from benchmarks.core import Case, Goal, compare_values, not_comparable
from benchmarks.data import unit_images


PUBLISHED_SCORE_S_PER_IMAGE = 0.026  # issue 8: the published scoring, latent 16, 2 threads, this CPU
PUBLISHED_SCORE_THREADS = 2
PUBLISHED_SCORE_WHEN = "issue 8, quoted here 2026-11-26"


def make_model(latent_dim: int, fit_images: torch.Tensor, device, seed: int = 0) -> GPND:
    """An untrained GPND (DCGAN init, seeded) with its densities fitted on `fit_images`."""
    torch.manual_seed(seed)
    model = GPND([1, 32, 32], latent_dim=latent_dim, jacobian="encoder").to(device).eval()
    model.prepare_scoring([{"image": b.to(device)} for b in fit_images.split(128)])
    return model


def compute_jacobian(inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The published helper: one backward pass per output dimension over the whole batch
    (weight gradients included); B×n×(C·H·W)."""
    n = output.shape[1]
    jacobian = torch.zeros(n, *inputs.shape, device=inputs.device)
    grad_output = torch.zeros_like(output)
    for i in range(n):
        if inputs.grad is not None:
            inputs.grad.zero_()
        grad_output.zero_()
        grad_output[:, i] = 1
        output.backward(grad_output, retain_graph=True)
        jacobian[i] = inputs.grad
    return jacobian.transpose(0, 1).reshape(len(inputs), n, -1)


def published_scores(model: GPND, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Batches through E and G with input gradients on, Jacobian rows by backward passes, then
    a per-image NumPy / SciPy loop (as the published code), scoring −log p(x)."""
    from scipy.stats import gennorm

    beta, loc, scale = (t.cpu().numpy() for t in (model.latent_beta, model.latent_loc, model.latent_scale))
    edges, density = model.residual_edges.cpu().numpy(), model.residual_density.cpu().numpy()
    m, n = x[0].numel(), model.latent_dim
    k = (m - n) * model.perp_dim_factor
    log_norm = math.lgamma(k / 2) - math.log(2.0) - (k / 2) * math.log(math.pi)

    def log_r_density(r: float) -> float:  # GPND.histogram_log_density for one value
        if r < edges[0]:
            value = density[0] * r / edges[0]
        elif r > edges[-1]:
            value = 0.0
        else:
            value = density[min(max(np.searchsorted(edges, r, side="right") - 1, 0), len(density) - 1)]
        return max(math.log(value) if value > 0 else -math.inf, LOG_DENSITY_FLOOR)

    scores = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].clone().requires_grad_(True)
        z = model.encoder(xb)
        recon = model.generator(z)
        jac = compute_jacobian(xb, z).cpu().numpy()
        z = z.detach().double().cpu().numpy()
        r_all = (xb - recon).detach().flatten(1).norm(dim=1).double().cpu().numpy()
        for i in range(len(jac)):
            s = np.linalg.svd(jac[i], compute_uv=False)
            log_d = float(np.sum(np.log(s)))
            log_pz = float(np.sum(np.maximum(gennorm.logpdf(z[i], beta, loc, scale), LOG_DENSITY_FLOOR)))
            r = float(r_all[i])
            log_perp = log_norm - (k - 1) * math.log(r) + log_r_density(r)
            scores.append(-(log_d + log_pz + log_perp))
    model.zero_grad(set_to_none=True)
    return torch.tensor(scores, dtype=torch.float64)


def our_scores(model: GPND, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`GPND.score` batch by batch, as the framework's scoring loop calls it (no_grad)."""
    with torch.no_grad():
        return torch.cat([model.score(b).double().cpu() for b in x.split(batch_size)])


def cases(size, device) -> list[Case]:
    x = unit_images(size.gpnd_images, 32, seed=1).to(device)
    fit = unit_images(size.gpnd_fit_images, 32, seed=2)
    out = []
    cuda = torch.device(device).type == "cuda"
    warm = x[:min(len(x), 8)]
    # the judged latent-16 rows are short (1-4 s a call) and scatter by ±10 % between runs of 3 on
    # a quiet 2-core machine (1.58-2.04× in three runs on 2026-12-07): medians of 5 there
    judged_repeats = size.at_least(5)
    for latent in size.gpnd_latents:
        model = make_model(latent, fit, device)
        if size.gpnd_chunk:
            model.jacobian_chunk = size.gpnd_chunk
        bs = min(size.gpnd_batch, len(x))  # one batch where there are fewer images
        out.append(Case(
            bench="1", what=f"GPND score, latent {latent}, {len(x):,} images 32×32",
            baseline_label=f"published loop (backward per latent dim, per-image NumPy; batch {bs})",
            ours_label=f"batched torch.func (`GPND.score`, jacobian=encoder, chunk {model.chunk_for(x[:bs])})",
            baseline=lambda m=model: published_scores(m, x, bs),
            ours=lambda m=model: our_scores(m, x, bs),
            warmup_baseline=lambda m=model: published_scores(m, warm, bs),
            warmup_ours=lambda m=model: our_scores(m, warm, bs),
            compare=compare_values(1e-4, "scores"),
            goal=Goal("speedup", 50.0 if cuda else 1.6),
            items=len(x), repeats=judged_repeats if latent == 16 else None))
        if latent == 16 and not cuda and size.repeats > 1:
            out.append(Case(
                bench="1", what=f"GPND score, latent 16, {len(x):,} images 32×32",
                baseline_label=f"the published code, {PUBLISHED_SCORE_S_PER_IMAGE * 1e3:.0f} ms per image as "
                               f"measured on this 2-core CPU at {PUBLISHED_SCORE_THREADS} threads "
                               f"({PUBLISHED_SCORE_WHEN}; quoted, not re-run)",
                ours_label="ours", baseline=None, ours=lambda m=model: our_scores(m, x, bs),
                warmup_ours=lambda m=model: our_scores(m, warm, bs),
                compare=not_comparable("a quoted time: the published code is not here"),
                # reported, not judged: a time quoted from another day against ours today moves with
                # the machine's speed, which drifts between hours on this shared VM (ours at 2 threads
                # 0.90-1.18 s in three runs on 2026-12-07, 1.41-1.85× against the quote); the ≥ 1.6×
                # target is judged on the row above, whose published loop runs beside ours
                goal=Goal("speedup"), items=len(x), repeats=judged_repeats,
                quoted_baseline_s=PUBLISHED_SCORE_S_PER_IMAGE * len(x),
                quoted_threads=PUBLISHED_SCORE_THREADS, quoted_when=PUBLISHED_SCORE_WHEN, only_where_judged=True,
                note="reported: the ≥ 1.6× target is judged on the published loop run beside ours, above"))
        if latent == size.gpnd_latents[0] and size.gpnd_single_images:
            xs = x[:size.gpnd_single_images]
            out.append(Case(
                bench="1", what=f"GPND score, latent {latent}, {len(xs):,} images 32×32",
                baseline_label="published loop one image at a time (backward per latent dim, batch 1)",
                ours_label=f"batched torch.func (`GPND.score`, batch {bs})",
                baseline=lambda m=model, xs=xs: published_scores(m, xs, 1),
                ours=lambda m=model, xs=xs: our_scores(m, xs, bs),
                warmup_baseline=lambda m=model: published_scores(m, warm[:2], 1),
                warmup_ours=lambda m=model: our_scores(m, warm, bs),
                compare=compare_values(1e-4, "scores"),
                goal=Goal("speedup", 50.0 if cuda else 1.6), items=len(xs)))
    return out
