"""label_fraction_subset: size, stratification, whole patients, determinism; the container subsets train only."""

import numpy as np
import pytest

from innerssl.data.datasets.base import LabeledSubset
from innerssl.data.splits import label_fraction_subset
from innerssl.registry import find_model
from tests.conftest import tiny_classifier_flags


def test_fraction_one_keeps_everything():
    labels = [0, 1, 1, 0, 2]
    assert label_fraction_subset(labels, None, 1.0, seed=0).tolist() == [0, 1, 2, 3, 4]


def test_subset_size_and_stratification():
    labels = [0] * 900 + [1] * 100
    indices = label_fraction_subset(labels, None, 0.1, seed=3)
    chosen = np.asarray(labels)[indices]
    assert len(indices) == 100 and (chosen == 1).sum() == 10 and (chosen == 0).sum() == 90
    assert len(set(indices.tolist())) == len(indices) and indices.tolist() == sorted(indices.tolist())


def test_every_class_kept_when_the_fraction_allows():
    labels = [0] * 95 + [1] * 3 + [2] * 2
    chosen = np.asarray(labels)[label_fraction_subset(labels, None, 0.05, seed=1)]
    assert set(chosen.tolist()) == {0, 1, 2}


def test_whole_patients_are_kept_or_dropped():
    groups = [f"p{i // 4}" for i in range(400)]  # 100 patients, 4 images each
    labels = [(i // 4) % 2 for i in range(400)]
    indices = label_fraction_subset(labels, groups, 0.2, seed=7)
    kept = [groups[i] for i in indices]
    assert len(set(kept)) == 20 and len(indices) == 80
    assert all(kept.count(g) == 4 for g in set(kept))


def test_multilabel_is_a_plain_patient_subset():
    labels = [(1.0, 0.0), (0.0, float("nan"))] * 50
    groups = [f"p{i // 2}" for i in range(100)]
    indices = label_fraction_subset(labels, groups, 0.1, seed=0)
    assert len(indices) == 10 and len({groups[i] for i in indices}) == 5


def test_seeded_determinism():
    labels = [0, 1] * 200
    first = label_fraction_subset(labels, None, 0.3, seed=5)
    assert np.array_equal(first, label_fraction_subset(labels, None, 0.3, seed=5))
    assert not np.array_equal(first, label_fraction_subset(labels, None, 0.3, seed=6))


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError):
        label_fraction_subset([0, 1], None, fraction, seed=0)


def test_container_subsets_training_split_only(tmp_path):
    def splits(fraction):
        container = find_model("DemoClassifier", [])()
        flags = dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, label_fraction=fraction))
        container.apply_flags(flags)
        return container.create_datamodule().splits

    full, quarter = splits(1.0), splits(0.25)
    assert isinstance(quarter.train, LabeledSubset)
    assert abs(len(quarter.train) - 0.25 * len(full.train)) < 2
    assert set(quarter.train.labels) == {0, 1} and len(quarter.train.labels) == len(quarter.train)
    for split in ("val", "test"):
        # The same decode cache (its key covers the files and labels of the split): the same images.
        assert getattr(quarter, split).folder == getattr(full, split).folder
