import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.datasets import ImageSet
from anomaly.data.protocols import (AnomalyRatio, OneClass, Split, anomaly_ratio_split,
                                    one_class_split, resolve_classes)

NAMES = [str(c) for c in range(10)]


def make_labels(per_class_train=50, per_class_test=20, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(n_classes), per_class_train),
                             np.repeat(np.arange(n_classes), per_class_test)])
    official_test = np.r_[np.zeros(per_class_train * n_classes, bool), np.ones(per_class_test * n_classes, bool)]
    perm = rng.permutation(len(labels))
    return labels[perm], official_test[perm]


def assert_disjoint(split: Split):
    parts = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    for p in (split.train, split.val, split.test):
        assert len(np.unique(p)) == len(p)


def test_one_class_split_sizes_labels_and_disjointness():
    labels, official_test = make_labels()
    s = one_class_split(labels, official_test, [3], val_fraction=0.1, seed=0)
    assert_disjoint(s)
    # test = the whole official test split, every class
    assert sorted(s.test.tolist()) == np.flatnonzero(official_test).tolist()
    assert s.test_anomalous.sum() == 9 * 20 and (~s.test_anomalous).sum() == 20
    # train = normal class only, from the official train split, minus its validation share
    assert set(labels[s.train]) == {3} and not official_test[s.train].any()
    assert len(s.train) == 45 and not s.train_anomalous.any()
    # validation: 10 % of each class of the train split, never test images
    assert len(s.val) == 50 and not official_test[s.val].any()
    assert np.array_equal(s.val_anomalous, labels[s.val] != 3)
    assert np.array_equal(s.test_anomalous, labels[s.test] != 3)


def test_one_class_split_normal_only_validation_and_seeding():
    labels, official_test = make_labels()
    s = one_class_split(labels, official_test, [0, 1], val_fraction=0.2, val_anomalies=False, seed=1)
    assert not s.val_anomalous.any() and len(s.val) == 20 and len(s.train) == 80
    again = one_class_split(labels, official_test, [0, 1], val_fraction=0.2, val_anomalies=False, seed=1)
    other = one_class_split(labels, official_test, [0, 1], val_fraction=0.2, val_anomalies=False, seed=2)
    assert np.array_equal(s.val, again.val) and np.array_equal(s.train, again.train)
    assert not np.array_equal(s.val, other.val)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_anomaly_ratio_split_matches_arae_p1(ratio):
    labels, _ = make_labels(per_class_train=80, per_class_test=20)  # 100 per class, pooled
    s = anomaly_ratio_split(labels, [7], ratio, seed=0)
    assert_disjoint(s)
    assert (len(s.train), (~s.val_anomalous).sum(), (~s.test_anomalous).sum()) == (60, 20, 20)
    assert not s.train_anomalous.any() and set(labels[s.train]) == {7}
    expected = int(20 * ratio / (1 - ratio))
    assert s.test_anomalous.sum() == expected and s.val_anomalous.sum() == expected
    assert abs(s.test_anomalous.mean() - ratio) < 0.03
    assert 7 not in set(labels[s.test][s.test_anomalous])


def test_anomaly_ratio_split_refuses_too_few_anomalies():
    labels = np.r_[np.zeros(100, int), np.ones(5, int)]
    with pytest.raises(AnomalyError, match="needs .* anomalies"):
        anomaly_ratio_split(labels, [0], 0.5)


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.1])
def test_anomaly_ratio_outside_open_interval(ratio):
    with pytest.raises(AnomalyError, match=rf"protocol.anomaly_ratio={ratio} must be in \(0, 1\)"):
        AnomalyRatio(normal=[0], anomaly_ratio=ratio)


def test_resolve_classes_ids_names_and_errors():
    assert resolve_classes([3, 1], NAMES) == [1, 3]
    assert resolve_classes(["Trouser"], ["T-shirt/top", "Trouser", "Bag"]) == [1]
    assert resolve_classes(4, NAMES) == [4]
    with pytest.raises(AnomalyError, match=r"unknown class 12 for dataset mnist; classes are ids 0…9"):
        resolve_classes([12], NAMES, "mnist")
    with pytest.raises(AnomalyError, match="unknown class 'cat'"):
        resolve_classes(["cat"], NAMES)
    with pytest.raises(AnomalyError, match="protocol.normal is empty"):
        resolve_classes([], NAMES)
    with pytest.raises(AnomalyError, match="names a class twice"):
        resolve_classes([1, 1], NAMES)
    with pytest.raises(AnomalyError, match="covers every class"):
        resolve_classes(list(range(10)), NAMES)


def test_protocol_objects_split_an_imageset_and_save(tmp_path):
    labels, official_test = make_labels(per_class_train=10, per_class_test=5)
    data = ImageSet("toy", torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), torch.from_numpy(labels),
                    NAMES, torch.from_numpy(official_test))
    split = OneClass(normal=["2"], val_fraction=0.2).split(data)
    assert split.normal_classes == [2]
    split.save(tmp_path / "split.npz")
    loaded = Split.load(tmp_path / "split.npz")
    for key in ("train", "val", "test", "val_anomalous", "test_anomalous"):
        assert np.array_equal(getattr(loaded, key), getattr(split, key))
    assert loaded.normal_classes == [2]
    no_test = ImageSet("toy", data.images, data.labels, NAMES, None)
    with pytest.raises(AnomalyError, match="has none; use protocol=anomaly_ratio"):
        OneClass(normal=[0]).split(no_test)
