"""Seeded splits at patient level: no patient's images land in two splits."""

from __future__ import annotations

from collections.abc import Sequence

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
