"""The contamination protocol (the VAE paper's EMNIST experiment) and the contamination_quantile
threshold."""

import math

import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.contamination import Contamination, contamination_split, impurity_count
from anomaly.evaluation.thresholds import ContaminationQuantile
from anomaly.config import instantiate
from anomaly.pipeline import build_method
from tests.conftest import compose_config


def letters_like(train_per_class=4800, test_per_class=800, classes=26):
    """Labels and official-test mask shaped like EMNIST letters (4,800 + 800 per letter)."""
    labels = np.concatenate([np.repeat(np.arange(classes), train_per_class),
                             np.repeat(np.arange(classes), test_per_class)])
    official_test = np.concatenate([np.zeros(classes * train_per_class, bool),
                                    np.ones(classes * test_per_class, bool)])
    return labels, official_test


def per_class(labels, indices, normal):
    counts = np.bincount(labels[indices], minlength=labels.max() + 1)
    return np.delete(counts, normal)


def test_published_emnist_sizes_from_the_defaults():
    labels, official_test = letters_like()
    s = contamination_split(labels, official_test, [0], contamination=1 / 33)
    assert s.sizes() == {"train": 4125, "val": 825, "test": 825,
                         "train_anomalies": 125, "val_anomalies": 25, "test_anomalies": 25}
    # evenly: 5 of each other letter in train, one of each in validation and test
    assert set(per_class(labels, s.train, 0)) == {5}
    assert set(per_class(labels, s.val, 0)) == {1} and set(per_class(labels, s.test, 0)) == {1}
    # train and validation from the official train split, test from the official test split
    assert not official_test[s.train].any() and not official_test[s.val].any()
    assert official_test[s.test].all()
    assert len(np.intersect1d(s.train, s.val)) == 0
    for part in ("train", "val", "test"):
        idx, flags = getattr(s, part), getattr(s, f"{part}_anomalous")
        assert np.array_equal(flags, labels[idx] != 0)


@pytest.mark.parametrize("c, n_train, n_val, n_test", [
    (0.03, 1000, 150, 600), (0.1, 500, 97, 61), (0.25, 1100, 50, 7), (0.5, 300, 300, 300)])
def test_every_split_meets_the_ratio_within_one_image(c, n_train, n_val, n_test):
    labels, official_test = letters_like(train_per_class=600, test_per_class=320, classes=10)
    labels[labels == 3] = 0  # two source classes for the normal "class 0": normals pool across them
    s = contamination_split(labels, official_test, [0], c, n_train=n_train, n_val=n_val, n_test=n_test,
                            seed=1)
    for part, n_normal in (("train", n_train), ("val", n_val), ("test", n_test)):
        sizes = s.sizes()
        impurities = sizes[f"{part}_anomalies"]
        assert sizes[part] - impurities == n_normal
        # the asked share c of (normals + impurities), met to within one image
        assert abs(impurities - c * (n_normal + impurities)) <= 1, (part, impurities)
        spread = per_class(labels, getattr(s, part), 0)
        spread = spread[[k for k in range(len(spread)) if k != 2]]  # class 3 is gone (merged into 0)
        assert spread.max() - spread.min() <= 1  # drawn evenly over the other classes
    assert impurity_count(4000, 1 / 33) == 125 and impurity_count(800, 1 / 33) == 25


def test_seeded_and_val_fraction():
    labels, official_test = letters_like(train_per_class=120, test_per_class=40, classes=5)
    a = contamination_split(labels, official_test, [2], 0.2, val_fraction=0.25, seed=3)
    b = contamination_split(labels, official_test, [2], 0.2, val_fraction=0.25, seed=3)
    c = contamination_split(labels, official_test, [2], 0.2, val_fraction=0.25, seed=4)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert not np.array_equal(a.train, c.train)
    assert a.sizes()["val"] - a.sizes()["val_anomalies"] == 30  # a quarter of the 120 train-split normals
    assert a.sizes()["train"] - a.sizes()["train_anomalies"] == 90


def test_too_few_images_and_bad_settings_are_refused():
    labels, official_test = letters_like(train_per_class=100, test_per_class=20, classes=3)
    names = ["A", "B", "C"]
    # c = 0.5 with 83 train + 17 validation normals asks ~42 + ~9 impurities of each of B and C:
    # B keeps only 10 images in the official train split, so it runs short
    keep = ~((labels == 1) & ~official_test) | (np.arange(len(labels)) % 100 < 10)
    with pytest.raises(AnomalyError, match=r"impurities of class 'B' from the official train split, "
                                           r"which has only 10"):
        contamination_split(labels[keep], official_test[keep], [0], 0.5, class_names=names)
    with pytest.raises(AnomalyError, match=r"protocol.n_train=500 but only 83 normal images"):
        contamination_split(labels, official_test, [0], 0.1, n_train=500)
    with pytest.raises(AnomalyError, match=r"protocol.n_test=21 but only 20"):
        contamination_split(labels, official_test, [0], 0.1, n_test=21)
    with pytest.raises(AnomalyError, match=r"protocol.contamination=1.5 must be in \(0, 1\)"):
        Contamination(contamination=1.5)
    with pytest.raises(AnomalyError, match=r"protocol.n_val=0 must be a positive integer"):
        Contamination(n_val=0)
    with pytest.raises(AnomalyError, match=r"protocol.n_train=12.5 must be a positive integer"):
        Contamination(n_train=12.5)
    data = ImageSet("tiny", torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), torch.from_numpy(labels),
                    names, official_test=None)
    with pytest.raises(AnomalyError, match="needs an official test split"):
        Contamination().split(data)


def test_protocol_object_names_anomalous():
    labels, official_test = letters_like(train_per_class=60, test_per_class=30, classes=4)
    data = ImageSet("tiny", torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), torch.from_numpy(labels),
                    ["w", "x", "y", "z"], official_test=torch.from_numpy(official_test))
    split = Contamination(anomalous=["w", "x"], contamination=0.2).split(data)
    assert split.normal_classes == [2, 3]
    assert set(labels[split.train[split.train_anomalous]]) == {0, 1}


def test_protocol_threshold_takes_the_protocols_contamination(tmp_path):
    cfg = compose_config(tmp_path, ["protocol=contamination", "protocol.contamination=0.1", "dataset=digits"])
    assert cfg.threshold._target_.endswith("ContaminationQuantile") and cfg.threshold.contamination == 0.1
    protocol = instantiate(cfg.protocol)
    assert isinstance(protocol, Contamination) and protocol.contamination == 0.1

    class DM:  # what build_method reads of a datamodule
        image_shape = (1, 16, 16)

    DM.protocol = protocol
    model = build_method(cfg, DM)
    rule = model.post_processor.rule
    assert isinstance(rule, ContaminationQuantile) and rule.contamination == 0.1
    # other protocols have no contamination: the rule then needs it given
    cfg = compose_config(tmp_path, ["threshold=contamination_quantile"])
    assert cfg.threshold.contamination is None
    DM.protocol = instantiate(cfg.protocol)
    with pytest.raises(AnomalyError, match="needs threshold.contamination"):
        build_method(cfg, DM)


def test_contamination_quantile_pools_training_scores_and_ignores_labels():
    val = torch.arange(10, dtype=torch.float64)
    train = torch.arange(10, 100, dtype=torch.float64)
    flags = torch.zeros(10, dtype=torch.bool)
    # 100 scores 0…99: the 0.9 quantile flags the 10 highest (scores > 89.1)
    tau = ContaminationQuantile(0.1).fit(val, flags, unlabeled=train)
    assert tau == pytest.approx(89.1)
    assert int((torch.cat([train, val]) > tau).sum()) == 10
    # labels play no part
    assert ContaminationQuantile(0.1).fit(val, ~flags, unlabeled=train) == tau
    # without training scores: validation alone (the per-epoch validation inside fit)
    assert ContaminationQuantile(0.2).fit(val, flags) == pytest.approx(7.2)
    assert math.isnan(ContaminationQuantile(0.1).fit(torch.tensor([1.0, math.inf]), flags[:2]))
    with pytest.raises(AnomalyError, match=r"threshold.contamination=0 must be in \(0, 1\)"):
        ContaminationQuantile(0)
