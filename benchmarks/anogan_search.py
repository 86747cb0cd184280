"""2. AnoGAN's latent search batched vs one image at a time; f-AnoGAN's one-pass score vs
AnoGAN's 500-step search on the same images.
"""

from __future__ import annotations

from functools import partial

import torch

from anomaly.methods.anogan import AnoGAN, latent_search, latent_search_per_image
from anomaly.methods.fanogan import FAnoGAN
from anomaly.nets import DCGANDiscriminator, DCGANEncoder, DCGANGenerator
from benchmarks.core import Case, Check, Goal, compare_values
from benchmarks.data import unit_images


def cases(size, device) -> list[Case]:
    cuda = torch.device(device).type == "cuda"
    search_what = f"AnoGAN latent search, {size.anogan_images} images × {size.anogan_steps} steps"
    # judged on the GPU and, on the CPU, at 2 threads (at 1 thread the per-image loop loses less
    # to batching: 2.6-2.9×). Issue 8 set 3.5× on the CPU, measured 3.4-4.2× then. On this 2-core
    # VM on 2026-12-07, quiet, unchanged code gave 3.03-3.83× (3.10, 3.41, 3.48, 3.49, 3.60, 3.83,
    # 3.03; a median of 3.48): the batched calls' time swings ±15 % between processes (ours
    # 1.38 s then 1.82 s in two runs of one script) while the per-image loop's holds. A target in
    # the middle of that spread fails half the runs of unchanged code and catches nothing; 3.0× is
    # under its low end and still fails a batched search that lost a fifth of its speed.
    search_goal = Goal("speedup", 30.0) if cuda else Goal("speedup", 3.0, threads=2)
    fast_what = f"AnoGAN {size.anogan_long_steps}-step search vs f-AnoGAN, {size.anogan_long_images} images"
    fast_goal = Goal("speedup", 500.0)

    side = size.anogan_image_size
    torch.manual_seed(0)
    top = size.anogan_top_width
    model = AnoGAN([1, side, side], generator=partial(DCGANGenerator, top_width=top),
                   discriminator=partial(DCGANDiscriminator, top_width=top)).to(device).eval()
    generator, discriminator = model.generator, model.discriminator
    x = (unit_images(size.anogan_images, side, seed=3) * 2 - 1).to(device)
    z0 = model.sample_prior(len(x), torch.Generator().manual_seed(0)).to(device)
    options = dict(model.search_options, steps=size.anogan_steps)
    out = [Case(
        bench="2", what=search_what + f" ({side}×{side}, DCGAN top width {size.anogan_top_width})",
        baseline_label="one image at a time (`latent_search_per_image`)",
        ours_label="all images at once (`latent_search`)",
        baseline=lambda: latent_search_per_image(generator, discriminator, x, z0, **options)[0],
        ours=lambda: latent_search(generator, discriminator, x, z0, **options)[0],
        compare=compare_values(1e-4, "scores"), goal=search_goal, only_where_judged=True,
        repeats=size.at_least(5),
        items=len(x) * size.anogan_steps, item="image·step")]

    torch.manual_seed(0)
    fast = FAnoGAN([1, side, side], generator=partial(DCGANGenerator, top_width=top),
                   critic=partial(DCGANDiscriminator, top_width=top, norm="layer"),
                   encoder=partial(DCGANEncoder, top_width=top, norm="layer")).to(device).eval()
    xl = x[:size.anogan_long_images]
    zl = z0[:size.anogan_long_images]
    long_options = dict(model.search_options, steps=size.anogan_long_steps)
    warm_options = dict(model.search_options, steps=2)

    def fanogan_scores() -> torch.Tensor:
        with torch.no_grad():
            return fast.score(xl)

    def both_finite(a: torch.Tensor, b: torch.Tensor) -> Check:
        finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
        return Check(None, "different models (no equality); both scores finite" if finite
                     else "a score is not finite")

    out.append(Case(
        bench="2", what=fast_what,
        baseline_label=f"AnoGAN, {size.anogan_long_steps} Adam steps on z (batched)",
        ours_label="f-AnoGAN, one encoder + generator + critic pass",
        baseline=lambda: latent_search(generator, discriminator, xl, zl, **long_options)[0],
        ours=fanogan_scores,
        warmup_baseline=lambda: latent_search(generator, discriminator, xl, zl, **warm_options)[0],
        compare=both_finite, goal=fast_goal, repeats=size.anogan_long_repeats, repeats_ours=size.at_least(11),
        items=len(xl), once=True))
    return out
