"""Seeded splits at patient level: no patient's images land in two splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def split_by_group(
    groups: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, val and test items; all items of a group (patient) go to one split.

    Fractions are of groups, so the split sizes in images are approximate when groups differ in size.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"Bad split fractions val={val_fraction}, test={test_fraction}")
    group_array = np.asarray(groups, dtype=object)
    unique = np.array(sorted(set(group_array.tolist())), dtype=object)
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = int(round(val_fraction * len(unique)))
    n_test = int(round(test_fraction * len(unique)))
    val_groups = set(unique[order[:n_val]].tolist())
    test_groups = set(unique[order[n_val : n_val + n_test]].tolist())
    assignment = np.array(
        [2 if g in test_groups else 1 if g in val_groups else 0 for g in group_array.tolist()], dtype=np.int64
    )
    return tuple(np.flatnonzero(assignment == k) for k in range(3))  # type: ignore[return-value]


def label_fraction_subset(
    labels: Sequence[Any],
    groups: Sequence[str] | None,
    fraction: float,
    seed: int,
) -> np.ndarray:
    """Sorted indices of a seeded subset holding about ``fraction`` of the labeled training images.

    Whole groups (patients) are kept or dropped; ``groups=None`` makes every image its own group. For binary
    and multiclass labels (ints) the subset is stratified: each class keeps ``round(fraction x its patients)``
    patients (a patient counts for its most frequent label), and at least one patient per class as long as
    ``fraction x patients`` is at least the number of classes. Multilabel labels (tuples or vectors) get a
    plain seeded subset of ``max(1, round(fraction x patients))`` patients. ``fraction=1`` keeps everything.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    count = len(labels)
    if fraction == 1 or count == 0:
        return np.arange(count)
    group_list = [str(g) for g in groups] if groups is not None else [str(i) for i in range(count)]
    members: dict[str, list[int]] = {}
    for index, group in enumerate(group_list):
        members.setdefault(group, []).append(index)
    names = sorted(members)
    rng = np.random.default_rng(seed)
    multilabel = any(isinstance(label, (tuple, list, np.ndarray)) for label in labels)
    if multilabel:
        order = rng.permutation(len(names))
        chosen = [names[i] for i in order[: max(1, int(round(fraction * len(names))))]]
    else:
        by_class: dict[int, list[str]] = {}
        for name in names:
            values, counts = np.unique([int(labels[i]) for i in members[name]], return_counts=True)
            by_class.setdefault(int(values[np.argmax(counts)]), []).append(name)
        keep_one = fraction * len(names) >= len(by_class)
        chosen = []
        for label in sorted(by_class):
            patients = by_class[label]
            wanted = int(round(fraction * len(patients)))
            if keep_one:
                wanted = max(wanted, 1)
            order = rng.permutation(len(patients))
            chosen.extend(patients[i] for i in order[:wanted])
    return np.array(sorted(i for name in chosen for i in members[name]), dtype=np.int64)
