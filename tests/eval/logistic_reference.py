"""An independent reference for the linear probe: binary logistic regression by Newton's method in NumPy float64.

Nothing here comes from innerssl (no torch, no L-BFGS): the standardisation, the objective, the solver and the
AUROC are written out again, so that a test or benchmark comparing the probe with this checks the probe's
convergence and folding, not one implementation against itself. Used by tests/eval and
benchmarks/linear_probe_convergence.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _objective(theta: np.ndarray, design: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float) -> float:
    z = design @ theta
    losses = np.logaddexp(0.0, z) - y * z  # -log p(y | z) of a Bernoulli with logit z
    return float(np.mean(weights * losses) + 0.5 * l2 * np.sum(theta[:-1] ** 2))


@dataclass(frozen=True)
class NewtonFit:
    weight: np.ndarray
    bias: float
    iterations: int
    largest_gradient: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight + self.bias


def newton_logistic_regression(
    features: np.ndarray,
    targets: np.ndarray,
    l2: float,
    positive_weight: float | None = None,
    tolerance: float = 1e-10,
    max_iterations: int = 100,
) -> NewtonFit:
    """Minimise mean(c_i x BCE(x_i . w + b, y_i)) + l2 / 2 |w|^2 (c_i = positive_weight for positives, else 1) by
    damped Newton steps until the gradient's largest entry is below ``tolerance``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    weights = np.where(y == 1, 1.0 if positive_weight is None else positive_weight, 1.0)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0  # the bias is not penalised
    theta = np.zeros(d + 1)
    gradient = np.full(d + 1, np.inf)
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 (the count is returned)
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (weights * (p - y)) / n + penalty * theta
        if np.abs(gradient).max() < tolerance:
            break
        curvature = weights * p * (1 - p) / n
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        current, size = _objective(theta, design, y, weights, l2), 1.0
        while _objective(theta - size * step, design, y, weights, l2) > current - 1e-4 * size * gradient @ step:
            size /= 2
            if size < 1e-10:
                break
        theta = theta - size * step
    return NewtonFit(theta[:-1], float(theta[-1]), iterations, float(np.abs(gradient).max()))


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mann-Whitney AUROC: the probability that a positive outscores a negative (ties count half)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    positives, negatives = scores[targets == 1], scores[targets == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def log_loss(logits: np.ndarray, targets: np.ndarray, positive_weight: float | None = None) -> float:
    weights = np.where(targets == 1, 1.0 if positive_weight is None else positive_weight, 1.0)
    return float(np.mean(weights * (np.logaddexp(0.0, logits) - targets * logits)))


@dataclass(frozen=True)
class ReferenceProbe:
    """The reference's own choice of L2 strength (best validation AUROC, ties: lower validation loss), as a model
    of raw features: standardised with the training features' statistics, then the Newton fit."""

    l2: float
    fit: NewtonFit
    mean: np.ndarray
    scale: np.ndarray
    val_aurocs: dict[float, float]

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self.fit.logits((np.asarray(features, dtype=np.float64) - self.mean) / self.scale)


def reference_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    l2_grid: tuple[float, ...],
    positive_weight: float | None = None,
) -> ReferenceProbe:
    """Standardise on ``train``, fit every strength of ``l2_grid`` by Newton, keep the best on ``val``."""
    train_x = np.asarray(train[0], dtype=np.float64)
    mean = train_x.mean(axis=0)
    scale = train_x.std(axis=0)
    scale = np.where(scale < 1e-8, 1.0, scale)
    best: tuple[tuple[float, float], ReferenceProbe] | None = None
    aurocs: dict[float, float] = {}
    for l2 in sorted(l2_grid, reverse=True):
        probe = ReferenceProbe(
            l2, newton_logistic_regression((train_x - mean) / scale, train[1], l2, positive_weight), mean, scale, aurocs
        )
        logits = probe.logits(val[0])
        aurocs[l2] = auroc(logits, val[1])
        rank = (aurocs[l2] if np.isfinite(aurocs[l2]) else -np.inf, -log_loss(logits, val[1], positive_weight))
        if best is None or rank > best[0]:
            best = (rank, probe)
    assert best is not None
    return best[1]
