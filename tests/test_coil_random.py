"""coil_random: GPND / ARAE's COIL-100 protocol, its sizes, ratios and errors."""

import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.coil_random import coil_outlier_ratio, CoilRandom, coil_random_split

OBJECTS = [str(n) for n in range(1, 101)]


def coil_labels(n_objects=100, views=72, missing=((2, 3), (5, 0), (5, 1))):
    """Class positions as load_coil100 gives them (object N is position N−1); `missing` drops
    (position, view) pairs, as the shared copy lacks a few views."""
    labels = np.repeat(np.arange(n_objects), views)
    keep = np.ones(len(labels), bool)
    for position, view in missing:
        keep[position * views + view] = False
    return labels[keep]


def coil_set(labels, names=None):
    names = names or [str(n) for n in range(1, int(labels.max()) + 2)]
    return ImageSet("coil100", torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8),
                    torch.from_numpy(labels), names)


def check_split(s, labels, normal, p):
    parts = [s.train, s.val, s.test]
    assert sum(len(x) for x in parts) == len(np.unique(np.concatenate(parts)))  # disjoint
    assert set(labels[s.train]) <= set(normal) and not s.train_anomalous.any()
    for idx, anomalous in ((s.test, s.test_anomalous), (s.val, s.val_anomalous)):
        assert np.array_equal(anomalous, ~np.isin(labels[idx], normal))
        assert abs(anomalous.sum() - p * len(idx)) <= 1  # the ratio, within one image


@pytest.mark.parametrize("n_normal, p", [(1, 0.5), (4, 0.25), (7, 0.15)])
def test_papers_sizes_and_ratios(n_normal, p):
    labels = coil_labels()
    protocol = CoilRandom(n_normal=n_normal, draw=3)
    assert protocol.outlier_ratio == p
    s = protocol.split(coil_set(labels))
    normal = s.normal_classes
    assert len(normal) == n_normal
    check_split(s, labels, normal, p)
    for c in normal:  # per object: 20 % test, 20 % of the other 80 % validation, the rest train
        n = int((labels == c).sum())
        n_test = int(np.floor(0.2 * n + 0.5))
        n_val = int(np.floor(0.2 * (n - n_test) + 0.5))
        assert (labels[s.test] == c).sum() == n_test and (labels[s.val] == c).sum() == n_val
        assert (labels[s.train] == c).sum() == n - n_test - n_val
    # one image per outlier object (93+ objects are plenty), validation from other objects
    test_objects = labels[s.test[s.test_anomalous]]
    val_objects = labels[s.val[s.val_anomalous]]
    assert len(set(test_objects)) == len(test_objects) and len(set(val_objects)) == len(val_objects)
    assert not set(test_objects) & set(val_objects)


def test_one_full_object_sizes():
    # 72 views: 14 test + 12 validation + 46 train normals; outliers 14 + 12 at 50 %
    s = CoilRandom(normal=[50]).split(coil_set(coil_labels()))
    assert s.sizes() == {"train": 46, "val": 24, "test": 28, "train_anomalies": 0,
                         "val_anomalies": 12, "test_anomalies": 14}


def test_draw_seeds_objects_and_split():
    data = coil_set(coil_labels())
    a, b = CoilRandom(n_normal=4, draw=0).split(data), CoilRandom(n_normal=4, draw=0).split(data)
    assert a.normal_classes == b.normal_classes and np.array_equal(a.test, b.test)
    draws = {tuple(CoilRandom(n_normal=4, draw=d).split(data).normal_classes) for d in range(5)}
    assert len(draws) == 5


def test_listed_objects_are_object_numbers():
    labels = coil_labels()
    protocol = CoilRandom(normal=[1, 3, 77, 10], draw=0)
    assert protocol.n_normal == 4 and protocol.outlier_ratio == 0.25
    s = protocol.split(coil_set(labels))
    assert s.normal_classes == [0, 2, 9, 76]  # objects 1, 3, 10, 77 at positions N−1
    check_split(s, labels, s.normal_classes, 0.25)
    explicit = CoilRandom(normal=["1", "3", "77"], outlier_ratio=0.3).split(coil_set(labels))
    assert explicit.normal_classes == [0, 2, 76]


def test_any_number_of_objects_gets_the_papers_rule():
    """1 / 4 / 7 objects: the papers' 50 / 25 / 15 %; between them linear in the number of
    objects; outside them the nearest end's share."""
    expected = {1: 0.5, 2: 0.5 - 0.25 / 3, 3: 0.5 - 0.5 / 3, 4: 0.25, 5: 0.25 - 0.1 / 3,
                6: 0.25 - 0.2 / 3, 7: 0.15, 8: 0.15, 20: 0.15}
    for n, p in expected.items():
        assert coil_outlier_ratio(n) == pytest.approx(p), n
    assert CoilRandom(normal=[1, 3, 77]).outlier_ratio == pytest.approx(1 / 3)
    s = CoilRandom(normal=[1, 3, 77]).split(coil_set(coil_labels()))
    check_split(s, coil_labels(), s.normal_classes, 1 / 3)
    # the rule's points come from the config
    assert CoilRandom(n_normal=2, paper_outlier_ratios={1: 0.4, 3: 0.2}).outlier_ratio == pytest.approx(0.3)


def test_setting_errors_name_the_value_and_what_is_allowed():
    with pytest.raises(AnomalyError, match=r"protocol.n_normal=4 but protocol.normal=\[1, 3\] lists 2"):
        CoilRandom(normal=[1, 3], n_normal=4)
    with pytest.raises(AnomalyError, match=r"protocol.n_normal=0 must be a positive integer"):
        CoilRandom(n_normal=0)
    with pytest.raises(AnomalyError, match=r"protocol.outlier_ratio=1.0 must be in \(0, 1\)"):
        CoilRandom(outlier_ratio=1.0)
    with pytest.raises(AnomalyError, match=r"protocol.test_fraction=0 must be in \(0, 1\)"):
        CoilRandom(test_fraction=0)
    with pytest.raises(AnomalyError, match=r"unknown class 101 for dataset coil100; classes are the numbers"):
        CoilRandom(normal=[101]).split(coil_set(coil_labels()))
    with pytest.raises(AnomalyError, match=r"n_normal=7 but dataset coil100 has only 5 classes"):
        CoilRandom(n_normal=7).split(coil_set(coil_labels(n_objects=5, views=10, missing=())))


def test_too_few_images_of_a_normal_class():
    labels = np.r_[np.zeros(3, int), np.repeat(np.arange(1, 10), 10)]
    with pytest.raises(AnomalyError, match=r"normal class '1' has only 3 images: .* leave it no validation "
                                           r"image \(needs at least 4 images\)"):
        CoilRandom(normal=[1]).split(coil_set(labels))
    with pytest.raises(AnomalyError, match=r"class 0 has only 3 images"):
        coil_random_split(labels, [0], 0.5)


def test_too_few_outliers():
    labels = np.r_[np.zeros(50, int), np.ones(10, int)]
    with pytest.raises(AnomalyError, match=r"protocol.outlier_ratio=0.5 needs 10 test \+ 8 validation "
                                           r"outliers but the other classes have only 10 images"):
        coil_random_split(labels, [0], 0.5)


def test_few_objects_spread_outliers_round_robin():
    # 3 outlier objects only: images spread evenly over them, validation reuses none of the test's
    labels = np.r_[np.zeros(100, int), np.repeat([1, 2, 3], 30)]
    s = coil_random_split(labels, [0], 0.5, seed=1)
    check_split(s, labels, [0], 0.5)
    per_object = np.bincount(labels[s.test[s.test_anomalous]], minlength=4)[1:]
    assert per_object.sum() == 20 and per_object.max() - per_object.min() <= 1


@pytest.mark.slow
def test_composed_config_and_end_to_end_on_generated_coil(tmp_path):
    from anomaly.config import instantiate
    from anomaly.pipeline import train
    from tests.conftest import TINY, compose_config
    from tests.helpers.formats import write_coil100

    write_coil100(tmp_path / "data", objects=range(1, 13), angles=range(0, 100, 5), size=32)
    cfg = compose_config(tmp_path / "run", [*TINY, "dataset=coil100", "protocol=coil_random",
                                            f"paths.data_dir={tmp_path / 'data'}", "dataset.image_size=16",
                                            "dataset.loader.download=false", "protocol.normal=[11]",
                                            "trainer.max_epochs=8"])
    protocol = instantiate(cfg.protocol)
    assert isinstance(protocol, CoilRandom) and cfg.threshold.positive == "normal"  # f1_inlier
    results = train(cfg)
    assert results["status"] == "ok" and results["protocol"]["normal"] == ["11"]
    # 20 views: 4 test + 3 validation + 13 train normals, outliers 4 + 3 (one per object)
    assert results["split_sizes"] == {"train": 13, "val": 6, "test": 8, "train_anomalies": 0,
                                      "val_anomalies": 3, "test_anomalies": 4}
    assert results["metrics"]["auroc"] > 0.8, results["metrics"]
    split = np.load(tmp_path / "run" / "split.npz")
    assert len(split["test"]) == 8
