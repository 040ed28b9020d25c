"""The linear probe's logistic regression: converged (against Newton's method and the optimality conditions),
multiclass and multilabel with unknown labels, the L2 choice on validation AUROC, and the folded standardisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.embeddings import Embedded
from innerssl.eval.linear_probe import (
    Standardisation,
    fit_linear_probe,
    fit_logistic_regression,
    probe_loss,
    ranking_auroc,
)
from innerssl.eval.metrics import classification_loss, classification_metrics, predicted_probabilities
from tests.eval.logistic_reference import auroc, newton_logistic_regression, reference_probe

BINARY = LabelInfo("binary", ("no", "yes"))
MULTICLASS = LabelInfo("multiclass", ("a", "b", "c"))
MULTILABEL = LabelInfo("multilabel", ("x", "y", "z"))


def binary_data(rows: int, features: int, seed: int, signal: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with an offset and scale (as embeddings have) and labels that depend on a few of them, with noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=generator, dtype=torch.float64) * 3 + 1
    direction = torch.zeros(features, dtype=torch.float64)
    direction[:4] = 1.0
    y = ((x - 1) @ direction * signal / 3 + torch.randn(rows, generator=generator, dtype=torch.float64) > 0).double()
    return x, y


@pytest.mark.parametrize("positive_weight", [None, 2.5])
def test_binary_fit_equals_newtons_method(positive_weight):
    x, y = binary_data(60, 40, seed=0)
    z = Standardisation.of(x)(x)
    for l2 in (1e-3, 0.1, 3.0):
        fit = fit_logistic_regression(z, y, BINARY, l2, positive_weight)
        newton = newton_logistic_regression(z.numpy(), y.numpy(), l2, positive_weight)
        assert fit.converged and newton.largest_gradient < 1e-9
        # Strongly convex: one optimum. A gradient below 1e-6 puts L-BFGS within ~1e-6 / l2 of it.
        np.testing.assert_allclose(fit.weight[0].numpy(), newton.weight, atol=20 * 1e-6 / l2)
        assert fit.bias.item() == pytest.approx(newton.bias, abs=20 * 1e-6 / l2)


def test_multiclass_fit_satisfies_the_optimality_conditions():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(90, 12, generator=generator, dtype=torch.float64)
    y = (x[:, :3] + 0.5 * torch.randn(90, 3, generator=generator, dtype=torch.float64)).argmax(dim=1)
    l2 = 0.05
    fit = fit_logistic_regression(x, y, MULTICLASS, l2)
    assert fit.converged and fit.weight.shape == (3, 12)
    # Written out: softmax probabilities minus one-hot targets, averaged, plus the penalty's gradient.
    logits = x.numpy() @ fit.weight.numpy().T + fit.bias.numpy()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - np.eye(3)[y.numpy()]
    weight_gradient = residual.T @ x.numpy() / len(x) + l2 * fit.weight.numpy()
    assert np.abs(weight_gradient).max() < 1e-6 and np.abs(residual.mean(axis=0)).max() < 1e-6


def test_multilabel_fit_ignores_unknown_labels():
    x, first = binary_data(80, 10, seed=2)
    generator = torch.Generator().manual_seed(3)
    y = torch.stack([first, (x[:, 5] > 1).double(), (torch.rand(80, generator=generator) > 0.5).double()], dim=1)
    y[torch.rand(80, 3, generator=generator) < 0.3] = math.nan
    l2 = 0.1
    joint = fit_logistic_regression(x, y, MULTILABEL, l2)
    assert joint.converged
    # The joint loss is the mean over every known entry, so label j alone is a binary fit on its known rows with
    # the strength scaled by (known entries) / (known entries of label j).
    known = ~torch.isnan(y)
    for label in range(3):
        rows = known[:, label]
        alone = fit_logistic_regression(
            x[rows], y[rows, label], BINARY, l2 * known.sum().item() / rows.sum().item(), tolerance=1e-9
        )
        torch.testing.assert_close(joint.weight[label], alone.weight[0], atol=1e-4, rtol=0)
    # An unknown entry's value does not matter.
    changed = y.clone()
    changed[~known] = 0.0
    assert not torch.equal(fit_logistic_regression(x, changed, MULTILABEL, l2).weight, joint.weight)
    again = y.clone()
    torch.testing.assert_close(fit_logistic_regression(x, again, MULTILABEL, l2).weight, joint.weight)


def test_probe_folds_the_standardisation_into_a_layer_on_raw_embeddings():
    x, y = binary_data(50, 20, seed=4)
    val_x, val_y = binary_data(40, 20, seed=5)
    probe = fit_linear_probe(Embedded(x.float(), y.float()), Embedded(val_x.float(), val_y.float()), BINARY)
    standardise = Standardisation.of(x.float())
    torch.testing.assert_close(probe.logits(val_x), probe.chosen.fit.logits(standardise(val_x)))
    assert probe.weight.shape == (1, 20) and probe.bias.shape == (1,)


def test_l2_strength_is_chosen_by_validation_auroc_as_the_reference_does():
    # Few noisy training rows in many dimensions: weak regularisation overfits, so the choice matters.
    x, y = (t.float() for t in binary_data(30, 60, seed=6, signal=2.0))
    val_x, val_y = (t.float() for t in binary_data(200, 60, seed=7, signal=2.0))
    grid = (1e-4, 1e-2, 1.0, 100.0)
    probe = fit_linear_probe(Embedded(x, y), Embedded(val_x, val_y), BINARY, grid)
    scores = {c.l2: c.val_auroc for c in probe.candidates}
    assert probe.l2 == max(scores, key=lambda l2: (scores[l2], l2)) and len(set(scores.values())) > 1
    reference = reference_probe((x.double().numpy(), y.numpy()), (val_x.double().numpy(), val_y.numpy()), grid)
    assert probe.l2 == reference.l2
    one_pair = 1 / (val_y.sum().item() * (1 - val_y).sum().item())  # AUROC's resolution: one reordered pair
    for l2, value in reference.val_aurocs.items():
        # A gradient below 1e-6 leaves the weights up to ~1e-6 / l2 from the optimum: at the weakest strength that
        # may reorder a few of the ~10,000 validation pairs, at the others none.
        assert scores[l2] == pytest.approx(value, abs=(5 if l2 < 1e-3 else 0.5) * one_pair), l2
    np.testing.assert_allclose(
        probe.logits(val_x).reshape(-1).numpy(), reference.logits(val_x.double().numpy()), atol=1e-3
    )


def test_validation_with_one_class_falls_back_to_the_validation_loss():
    x, y = binary_data(40, 8, seed=8)
    val_x, _ = binary_data(10, 8, seed=9)
    val = Embedded(val_x.float(), torch.ones(10))
    probe = fit_linear_probe(Embedded(x.float(), y.float()), val, BINARY, (0.01, 1.0, 100.0))
    assert all(math.isnan(c.val_auroc) for c in probe.candidates)
    assert probe.chosen.val_loss == min(c.val_loss for c in probe.candidates)


def test_a_fit_stopped_by_the_iteration_limit_is_not_converged():
    x, y = binary_data(40, 30, seed=10)
    assert not fit_logistic_regression(x, y, BINARY, 1e-4, max_iterations=2).converged
    assert fit_logistic_regression(x, y, BINARY, 1e-4).converged


@pytest.mark.parametrize("label_info", [BINARY, MULTICLASS, MULTILABEL], ids=lambda info: info.task)
def test_probe_loss_is_the_classification_loss_in_the_logits_dtype(label_info):
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(16, label_info.num_outputs, generator=generator)
    if label_info.task == "multilabel":
        targets = (torch.rand(16, 3, generator=generator) > 0.5).float()
        targets[0, 1] = math.nan
    else:
        targets = torch.randint(0, len(label_info.class_names), (16,), generator=generator)
    weight = 3.0 if label_info.task == "binary" else None
    expected = classification_loss(logits, targets, label_info, weight)
    torch.testing.assert_close(probe_loss(logits, targets, label_info, weight), expected)
    assert probe_loss(logits.double(), targets, label_info, weight).dtype == torch.float64


@pytest.mark.parametrize("label_info", [BINARY, MULTICLASS, MULTILABEL], ids=lambda info: info.task)
def test_ranking_auroc_equals_torchmetrics_where_probabilities_do_not_saturate(label_info):
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(40, label_info.num_outputs, generator=generator, dtype=torch.float64)
    if label_info.task == "multilabel":
        targets = (torch.rand(40, 3, generator=generator) > 0.5).float()
        targets[:5, 0] = math.nan
    else:
        targets = torch.randint(0, len(label_info.class_names), (40,), generator=generator)
    expected = classification_metrics(predicted_probabilities(logits, label_info), targets, label_info)["auroc"]
    assert ranking_auroc(logits, targets, label_info) == pytest.approx(expected, abs=1e-6)


def test_ranking_auroc_ranks_logits_whose_probabilities_saturate_and_keeps_exact_ties():
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    logits = torch.tensor([[-60.0], [90.0], [80.0], [100.0], [-50.0], [-40.0]], dtype=torch.float64)
    expected = auroc(logits[:, 0].numpy(), targets.numpy())
    assert ranking_auroc(logits, targets, BINARY) == expected == 7 / 9
    # float32 probabilities make every positive logit 1.0 and tie them; the ranks of the logits do not.
    saturated = classification_metrics(predicted_probabilities(logits.float(), BINARY), targets, BINARY)["auroc"]
    assert saturated != pytest.approx(expected)
    assert ranking_auroc(logits * 2 + 1, targets, BINARY) == ranking_auroc(logits, targets, BINARY)  # same ranking
