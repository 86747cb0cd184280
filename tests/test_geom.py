"""GEOM (anomaly/methods/geom.py): the 72 transformations, the scores, the Dirichlet fit, the
wide residual network, and the settings it refuses."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from anomaly import AnomalyError
from anomaly.config_schema import ConfigError, check_train
from anomaly.methods.geom import (GEOM, NUM_TRANSFORMATIONS, TRANSFORMATIONS, all_transformations,
                                  apply_transformations, dirichlet_mle, inverse_digamma, transformation_maps)
from anomaly.nets.wrn import SameConv2d, WideResNet
from tests.conftest import compose_config

T = NUM_TRANSFORMATIONS


def label(flip: bool, tx: int, ty: int, k: int) -> int:
    return TRANSFORMATIONS.index((flip, tx, ty, k))


def keras_reference(image: np.ndarray, flip: bool, tx: int, ty: int, k: int) -> np.ndarray:
    """The published AffineTransformation on one H×W×C image: np.fliplr, then Keras 2.2's
    apply_affine_transform (scipy.ndimage.affine_transform of each channel, identity matrix,
    offset (tx, ty), order 1, mode reflect), then np.rot90."""
    x = np.fliplr(image) if flip else image
    if tx or ty:
        x = np.stack([ndimage.affine_transform(x[..., c], np.eye(2), offset=(tx, ty), order=1, mode="reflect")
                      for c in range(x.shape[-1])], -1)
    return np.rot90(x, k)


# ---- the 72 transformations ---------------------------------------------------------------------------
def test_the_table_is_the_codes_product_order():
    assert T == 72 and len(set(TRANSFORMATIONS)) == 72
    assert TRANSFORMATIONS[:5] == [(False, 0, 0, 0), (False, 0, 0, 1), (False, 0, 0, 2), (False, 0, 0, 3),
                                   (False, 0, -8, 0)]
    assert TRANSFORMATIONS[12] == (False, -8, 0, 0) and TRANSFORMATIONS[36] == (True, 0, 0, 0)
    assert TRANSFORMATIONS[-1] == (True, 8, 8, 3)


def test_the_72_transformations_of_an_image_are_distinct():
    x = torch.rand(2, 3, 32, 32)
    out = all_transformations(x, transformation_maps(32, 8)).reshape(2, T, -1)
    for i in range(2):
        assert len(torch.unique(out[i], dim=0)) == T
    assert len(torch.unique(transformation_maps(32, 8), dim=0)) == T


def test_each_transformation_is_the_published_one():
    x = torch.rand(T, 3, 32, 32, dtype=torch.float64)
    out = apply_transformations(x, transformation_maps(32, 8), torch.arange(T))
    for t, (flip, tx, ty, k) in enumerate(TRANSFORMATIONS):
        expected = keras_reference(x[t].permute(1, 2, 0).numpy(), flip, tx, ty, k)
        assert np.allclose(out[t].permute(1, 2, 0).numpy(), expected, atol=1e-12), TRANSFORMATIONS[t]


def test_flip_rotation_and_translation_say_what_they_do():
    x = torch.rand(1, 1, 32, 32)
    maps = transformation_maps(32, 8)

    def under(flip, tx, ty, k):
        return apply_transformations(x, maps, torch.tensor([label(flip, tx, ty, k)]))[0, 0]

    img = x[0, 0]
    assert torch.equal(under(False, 0, 0, 0), img)
    assert torch.equal(under(True, 0, 0, 0), img.flip(1))  # horizontal flip: columns reversed
    for k in range(4):  # counter-clockwise quarter turns, as np.rot90
        assert torch.equal(under(False, 0, 0, k), torch.rot90(img, k, (0, 1)))
    assert under(False, 0, 0, 1)[0, 0] == img[0, -1]  # top-right corner → top-left
    # tx = +8 takes rows from 8 below (content moves up); the 8 rows the shift opens reflect
    # the bottom rows with the edge repeated (scipy's "reflect": row 24 ← row 31, 25 ← 30, …)
    down = under(False, 8, 0, 0)
    assert torch.equal(down[:24], img[8:]) and torch.equal(down[24:], img.flip(0)[:8])
    # ty = −8 takes columns from 8 to the left; columns 0…7 mirror columns 7…0
    left = under(False, 0, -8, 0)
    assert torch.equal(left[:, 8:], img[:, :24]) and torch.equal(left[:, :8], img[:, :8].flip(1))
    # the order: flip, then translate, then rotate
    assert torch.equal(under(True, 8, 0, 1), torch.rot90(under(True, 8, 0, 0), 1, (0, 1)))
    assert torch.equal(under(True, 8, 0, 0)[:24], img.flip(1)[8:])


def test_a_batch_with_a_label_per_image_and_all_72():
    x = torch.rand(5, 2, 16, 16)
    maps = transformation_maps(16, 4)
    labels = torch.tensor([0, 71, 5, 36, 5])
    every = all_transformations(x, maps).view(5, T, 2, 16, 16)
    assert torch.equal(apply_transformations(x, maps, labels), every[torch.arange(5), labels])
    for t in (0, 13, 71):  # image-major rows: i·72 + t
        assert torch.equal(every[:, t], apply_transformations(x, maps, torch.full((5,), t)))


# ---- the scores -------------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """Knows one image x0: logits = −scale · distance of the input to each T_t(x0)."""

    def __init__(self, x0: torch.Tensor, maps: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.templates = all_transformations(x0[None], maps).flatten(1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * torch.cdist(x.flatten(1), self.templates)


def model_with_oracle(x0: torch.Tensor, score: str, scale: float = 100.0) -> GEOM:
    model = GEOM((1, 16, 16), net=partial(WideResNet, depth=10, widen_factor=1), translation=4,
                 score=score).eval()
    model.net = Oracle(x0, model.maps, scale)
    return model


def test_an_image_whose_transformations_are_all_recognised_scores_lowest():
    torch.manual_seed(0)
    x0 = torch.rand(1, 16, 16) * 2 - 1
    model = model_with_oracle(x0, "simple")
    other = torch.rand(1, 1, 16, 16) * 2 - 1
    rotated = torch.rot90(x0, 1, (1, 2))[None]
    scores = model.score(torch.cat([x0[None], other, rotated]))
    assert abs(scores[0]) < 1e-6  # every T_t(x0) recognised as t: −mean log p = 0, the minimum
    assert scores[1] > 1 and scores[2] > 1  # an unknown image, and x0 turned: T_t misread


def test_dirichlet_score_fitted_on_noisy_copies_ranks_the_known_image_first():
    torch.manual_seed(0)
    x0 = torch.rand(1, 16, 16) * 2 - 1
    model = model_with_oracle(x0, "dirichlet", scale=0.5)
    train = [{"image": x0 + 0.05 * torch.randn(64, 1, 16, 16)} for _ in range(2)]
    model.prepare_scoring(train)
    assert bool(model.dirichlet_fitted) and torch.isfinite(model.dirichlet_alpha).all()
    test = torch.cat([x0[None] + 0.05 * torch.randn(4, 1, 16, 16), torch.rand(4, 1, 16, 16) * 2 - 1])
    scores = model.score(test)
    assert scores[:4].max() < scores[4:].min()


def reference_log_probs(model: GEOM, x: torch.Tensor) -> torch.Tensor:
    """B×T×T by one forward pass per transformation, as the published code (no chunking)."""
    return torch.stack([F.log_softmax(model(apply_transformations(x, model.maps, torch.full((len(x),), t))).double(), 1)
                        for t in range(T)], 1)


def test_scores_are_the_published_formulas_whatever_the_chunk():
    torch.manual_seed(0)
    model = GEOM((1, 16, 16), net=partial(WideResNet, depth=10, widen_factor=1), translation=4,
                 score_chunk=72).eval()
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        log_p = reference_log_probs(model, x)
        simple = log_p.diagonal(dim1=1, dim2=2).mean(1)
        assert torch.allclose(model.score(x), -simple)  # unfitted: the simplified score
        alpha = torch.rand(T, T, dtype=torch.float64) * 5 + 0.1
        model.dirichlet_alpha.copy_(alpha)
        model.dirichlet_fitted.fill_(True)
        expected = -sum(((alpha[t] - 1) * log_p[:, t]).sum(1) for t in range(T)) / T
        assert torch.allclose(model.score(x), expected)
        model.score_chunk = 100 * T  # the whole batch in one pass: the same scores
        assert torch.allclose(model.score(x), expected)
        model.score_type = "simple"
        assert torch.allclose(model.score(x), -simple)


def test_prepare_scoring_fits_each_transformation_and_travels_with_the_weights():
    torch.manual_seed(1)
    model = GEOM((1, 16, 16), net=partial(WideResNet, depth=10, widen_factor=1), translation=4)
    images = torch.rand(40, 1, 16, 16) * 2 - 1
    model.prepare_scoring([{"image": images[:25]}, {"image": images[25:]}])
    assert model.training  # restored after the fit
    model.eval()
    with torch.no_grad():
        log_p = reference_log_probs(model, images)
    expected = dirichlet_mle(log_p.exp().mean(0), log_p.mean(0))
    assert torch.allclose(model.dirichlet_alpha, expected, rtol=1e-6)
    again = GEOM((1, 16, 16), net=partial(WideResNet, depth=10, widen_factor=1), translation=4).eval()
    again.load_state_dict(model.state_dict())
    assert bool(again.dirichlet_fitted) and torch.equal(again.score(images[:3]), model.score(images[:3]))


# ---- the Dirichlet fit -----------------------------------------------------------------------------
def test_dirichlet_fit_recovers_known_parameters():
    torch.manual_seed(0)
    alpha = torch.tensor([[0.3, 1.0, 2.5, 7.0, 0.8], [40.0, 5.0, 12.0, 1.5, 3.0]], dtype=torch.float64)
    samples = torch.distributions.Dirichlet(alpha).sample((200_000,))
    mean_log = samples.log().mean(0)
    fit = dirichlet_mle(samples.mean(0), mean_log)
    assert torch.allclose(fit, alpha, rtol=0.03)
    # the maximum-likelihood equations hold: ψ(α_k) − ψ(Σα) = mean log p_k
    stationary = torch.special.digamma(fit) - torch.special.digamma(fit.sum(-1, keepdim=True))
    assert torch.allclose(stationary, mean_log, atol=1e-8)


def test_inverse_digamma_inverts_digamma():
    y = torch.linspace(-12, 6, 200, dtype=torch.float64)
    assert torch.allclose(torch.special.digamma(inverse_digamma(y)), y, atol=1e-10)


# ---- the network ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, size, depth, widen", [(1, 32, 10, 4), (3, 32, 16, 2), (3, 64, 10, 1),
                                                          (1, 16, 10, 1), (1, 28, 10, 1)])
def test_wrn_takes_any_channels_and_sizes(channels, size, depth, widen):
    net = WideResNet((channels, size, size), 72, depth, widen)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 72)
    convs3 = [m for m in net.modules() if isinstance(m, SameConv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 1 + 6 * ((depth - 4) // 6)  # conv1 + 2 per block, n blocks × 3 groups
    # 64×64 ends at 16×16: the code's 8×8 average pooling leaves 2×2 per channel before the dense layer
    assert net.fc.in_features == 64 * widen * (4 if size == 64 else 1)


def test_wrn_stride_two_pads_as_tensorflow_same():
    conv = SameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 8, 8)
    # TensorFlow's "same": the one pixel of padding of an even side goes below / right
    assert torch.allclose(conv(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2))
    assert conv(torch.randn(1, 2, 7, 7)).shape[-1] == 4


def test_wrn_dropout_and_initialisation():
    net = WideResNet((1, 32, 32), 72, 10, 4, dropout=0.3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in net.modules())
    big = net.blocks[-1].conv2.weight  # 256·9 inputs: He normal, std √(2 / fan_in)
    assert abs(big.std().item() - (2 / big[0].numel()) ** 0.5) < 0.002
    assert torch.equal(net.fc.bias, torch.zeros(72)) and net.fc.weight.abs().max() <= 256 ** -0.5


# ---- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("method.net.depth=12", "method.net.depth=12: must be an integer 6n + 4 ≥ 10 (10, 16, 22, 28, …)"),
    ("method.score=mean", "method.score='mean': must be one of dirichlet, simple"),
    ("method.net.dropout=1.0", "method.net.dropout=1.0: must be a number in [0, 1)"),
    ("method.score_chunk=10", "method.score_chunk=10: must be an integer ≥ 72, or null (automatic: 288 on a "
                              "CPU, 4608 on a GPU)"),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError) as refused:
        check_train(compose_config(tmp_path, ["method=geom", override]))
    assert str(refused.value) == message


def test_settings_the_image_size_refuses_in_one_line():
    with pytest.raises(AnomalyError, match=r"^method.translation=16: must be in \[1, 15\] for 16×16 network "
                                           r"inputs$"):
        GEOM((1, 16, 16), translation=16)
    with pytest.raises(AnomalyError, match=r"^WideResNet depth=12: a wide residual network's depth is 6n \+ 4"):
        WideResNet((1, 32, 32), 72, depth=12)


def test_the_paper_configs_pad_28_to_32(tmp_path):
    for dataset in ("fashion_mnist", "mnist"):
        cfg = compose_config(tmp_path, ["method=geom", f"dataset={dataset}"])
        assert cfg.paper_settings.name == f"geom_{dataset}"
        assert (cfg.dataset.image_size, cfg.method.pad, cfg.method.value_range) == (28, 2, "symmetric")
        assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (216, 128)
    model = GEOM((1, 28, 28), pad=2)
    assert model.maps.shape == (T, 32 * 32)
    padded = model.padded(torch.zeros(1, 1, 28, 28))
    assert padded.shape[-1] == 32 and padded[0, 0, 0, 0] == -1 and padded[0, 0, 2, 2] == 0
