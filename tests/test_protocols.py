import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.anomaly_ratio import AnomalyRatio, anomaly_ratio_split
from anomaly.data.protocols.base import Split, resolve_classes, resolve_normal_classes
from anomaly.data.protocols.holdout_class import HoldoutClass, holdout_class_split
from anomaly.data.protocols.one_class import OneClass, one_class_split

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


# ---- `anomalous`: the complement of `normal` ------------------------------------------------------
def toy_imageset(labels, official_test=None):
    return ImageSet("toy", torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), torch.from_numpy(labels),
                    NAMES, None if official_test is None else torch.from_numpy(official_test))


@pytest.mark.parametrize("protocol_class", [OneClass, AnomalyRatio])
def test_anomalous_is_the_complement_of_normal(protocol_class):
    labels, official_test = make_labels(per_class_train=30, per_class_test=10)
    data = toy_imageset(labels, official_test)
    by_anomalous = protocol_class(anomalous=[3], seed=1).split(data)
    by_normal = protocol_class(normal=[0, 1, 2, 4, 5, 6, 7, 8, 9], seed=1).split(data)
    assert by_anomalous.normal_classes == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    for key in ("train", "val", "test", "train_anomalous", "val_anomalous", "test_anomalous"):
        assert np.array_equal(getattr(by_anomalous, key), getattr(by_normal, key))
    assert set(labels[by_anomalous.test[by_anomalous.test_anomalous]]) == {3}
    # several anomalous classes, by name too
    two = protocol_class(anomalous=["3", 7]).split(data)
    assert two.normal_classes == [0, 1, 2, 4, 5, 6, 8, 9]


def test_normal_and_anomalous_defaults_and_errors():
    assert (OneClass().normal, OneClass().anomalous) == ([0], None)  # neither given: class 0 normal
    assert (HoldoutClass().normal, HoldoutClass().anomalous) == (None, [0])  # class 0 the anomaly
    with pytest.raises(AnomalyError, match=r"protocol.normal=\[1\] and protocol.anomalous=\[3\] are mutually exclusive"):
        OneClass(normal=[1], anomalous=[3])
    with pytest.raises(AnomalyError, match="mutually exclusive"):
        resolve_normal_classes([1], [3], NAMES)
    with pytest.raises(AnomalyError, match=r"protocol.anomalous: unknown class 12 for dataset mnist"):
        resolve_normal_classes(None, [12], NAMES, "mnist")
    with pytest.raises(AnomalyError, match=r"protocol.anomalous is empty: give at least one anomalous class"):
        resolve_normal_classes(None, [], NAMES)
    with pytest.raises(AnomalyError, match=r"protocol.anomalous=\[.*\] covers every class of mnist: "
                                           "nothing is left to be normal"):
        resolve_normal_classes(None, list(range(10)), NAMES, "mnist")
    with pytest.raises(AnomalyError, match="protocol.anomalous=.* names a class twice"):
        resolve_normal_classes(None, [2, 2], NAMES)
    assert resolve_normal_classes(None, 4, NAMES) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert resolve_normal_classes([4], None, NAMES) == [4]


@pytest.mark.slow
def test_anomalous_from_the_composed_config(tmp_path):
    from anomaly.config import instantiate
    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, ["protocol=one_class", "protocol.anomalous=[3]"])
    assert instantiate(cfg.protocol).anomalous == [3] and instantiate(cfg.protocol).normal is None
    assert instantiate(compose_config(tmp_path, ["protocol=anomaly_ratio"]).protocol).normal == [0]
    cfg = compose_config(tmp_path, ["protocol=one_class", "protocol.normal=[1]", "protocol.anomalous=[3]"])
    with pytest.raises(AnomalyError, match="mutually exclusive"):
        instantiate(cfg.protocol)
    cfg = compose_config(tmp_path, ["experiment=adae_mnist", "protocol.anomalous=[5]"])
    protocol = instantiate(cfg.protocol)
    assert isinstance(protocol, HoldoutClass) and protocol.anomalous == [5] and protocol.train_fraction == 0.8
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 100 and cfg.dataset.image_size == 32


# ---- holdout_class: ADAE's protocol -----------------------------------------------------------------
def test_holdout_class_split_sizes_and_disjointness():
    labels, _ = make_labels(per_class_train=80, per_class_test=20)  # 100 per class, pooled
    normal = [c for c in range(10) if c != 3]
    s = holdout_class_split(labels, normal, train_fraction=0.8, val_fraction=0.1, val_anomaly_fraction=0.1)
    assert_disjoint(s)
    # every image is used once: train, validation or test
    assert len(s.train) + len(s.val) + len(s.test) == len(labels)
    # per normal class: 80 training share (72 train + 8 validation), 20 test
    for c in normal:
        assert (labels[s.train] == c).sum() == 72 and (labels[s.val] == c).sum() == 8
        assert (labels[s.test] == c).sum() == 20
    assert not s.train_anomalous.any() and 3 not in set(labels[s.train])
    # the anomaly class: 10 % to validation, the rest to test
    assert s.val_anomalous.sum() == 10 and s.test_anomalous.sum() == 90
    assert np.array_equal(s.test_anomalous, labels[s.test] == 3)
    assert np.array_equal(s.val_anomalous, labels[s.val] == 3)


def test_holdout_class_test_is_held_out_normals_plus_the_whole_anomaly_class():
    labels, _ = make_labels(per_class_train=80, per_class_test=20)
    normal = [c for c in range(10) if c != 7]
    s = holdout_class_split(labels, normal, val_anomaly_fraction=0.0, seed=3)
    assert_disjoint(s)
    assert set(s.test[s.test_anomalous]) == set(np.flatnonzero(labels == 7))  # all of it
    assert not s.val_anomalous.any() and len(s.val) == 9 * 8
    # test normals = every normal image that is neither trained on nor validated with
    held_out = set(np.flatnonzero(labels != 7)) - set(s.train) - set(s.val)
    assert set(s.test[~s.test_anomalous]) == held_out and len(held_out) == 9 * 20
    again = holdout_class_split(labels, normal, val_anomaly_fraction=0.0, seed=3)
    other = holdout_class_split(labels, normal, val_anomaly_fraction=0.0, seed=4)
    assert np.array_equal(s.train, again.train) and not np.array_equal(s.train, other.train)


def test_holdout_class_protocol_object_and_bad_fractions():
    labels, official_test = make_labels(per_class_train=40, per_class_test=10)
    split = HoldoutClass(anomalous=["5"]).split(toy_imageset(labels, official_test))
    assert split.normal_classes == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert set(labels[split.test[split.test_anomalous]]) == {5}
    # no official test split needed: the images are pooled
    assert len(HoldoutClass(anomalous=[5]).split(toy_imageset(labels)).test) == len(split.test)
    with pytest.raises(AnomalyError, match=r"protocol.train_fraction=1.0 must be in \(0, 1\)"):
        HoldoutClass(train_fraction=1.0)
    with pytest.raises(AnomalyError, match=r"protocol.val_fraction=0.0 must be in \(0, 1\)"):
        HoldoutClass(val_fraction=0.0)
    with pytest.raises(AnomalyError, match=r"protocol.val_anomaly_fraction=1.0 must be in \[0, 1\)"):
        HoldoutClass(val_anomaly_fraction=1.0)
    with pytest.raises(AnomalyError, match=r"protocol.val_anomaly_fraction=-0.1 must be in \[0, 1\)"):
        holdout_class_split(labels, [0], val_anomaly_fraction=-0.1)


def test_one_class_n_train_is_a_seeded_subset_of_the_training_images():
    from anomaly.data.protocols.one_class import one_class_split

    labels = np.repeat(np.arange(3), 100)
    official_test = np.zeros(300, dtype=bool)
    official_test[::4] = True
    full = one_class_split(labels, official_test, [1], seed=3)
    part = one_class_split(labels, official_test, [1], seed=3, n_train=20)
    assert len(part.train) == 20 and set(part.train) <= set(full.train)
    assert np.array_equal(part.val, full.val) and np.array_equal(part.test, full.test)
    assert np.array_equal(one_class_split(labels, official_test, [1], seed=3, n_train=20).train, part.train)
    with pytest.raises(AnomalyError, match=r"protocol.n_train=500 but the normal classes have only"):
        one_class_split(labels, official_test, [1], n_train=500)


def test_one_class_n_test_keeps_the_test_class_mix_and_leaves_train_and_validation_alone():
    from anomaly.data.protocols.one_class import OneClass, one_class_split

    labels = np.concatenate([np.repeat(np.arange(3), 100), np.full(60, 3)])  # class 3 is rarer
    official_test = np.zeros(len(labels), dtype=bool)
    official_test[::4] = True  # test: 25 of each of classes 0–2, 15 of class 3
    full = one_class_split(labels, official_test, [1], seed=3)
    part = one_class_split(labels, official_test, [1], seed=3, n_test=18)
    assert len(part.test) == 18 and set(part.test) <= set(full.test)
    # 18 × (25, 25, 25, 15) / 90 = (5, 5, 5, 3)
    assert np.bincount(labels[part.test], minlength=4).tolist() == [5, 5, 5, 3]
    assert part.test_anomalous.tolist() == (labels[part.test] != 1).tolist()
    assert np.array_equal(part.train, full.train) and np.array_equal(part.val, full.val)
    assert np.array_equal(one_class_split(labels, official_test, [1], seed=3, n_test=18).test, part.test)
    assert not np.array_equal(one_class_split(labels, official_test, [1], seed=4, n_test=18).test, part.test)
    with pytest.raises(AnomalyError, match=r"protocol.n_test=91 but there are only 90 images"):
        one_class_split(labels, official_test, [1], n_test=91)
    with pytest.raises(AnomalyError, match=r"protocol.n_test=0 must be a positive integer"):
        OneClass(n_test=0)
