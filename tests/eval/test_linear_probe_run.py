"""A frozen-encoder classifier run is a linear probe: one fit, converged, equal to an independent Newton fit on the
same embeddings and subset, leaving the outputs every classifier run leaves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from innerssl.eval.classifier import METRIC_PREFIX
from innerssl.eval.metrics import classification_metrics
from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.registry import find_model
from innerssl.training import train
from tests.conftest import tiny_classifier_flags
from tests.eval.logistic_reference import auroc, reference_probe


def classifier(tmp_path, **overrides):
    container = find_model("DemoClassifier", [])()
    flags = dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, **overrides))
    container.apply_flags(flags)
    return container


def plain_embeddings(encoder, dataset, stream) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings written out without innerssl's embedding code: eval mode, no_grad, the eval stream, in order."""
    encoder.eval()
    features, labels = [], []
    with torch.no_grad():
        for images, targets in DataLoader(stream.loader_dataset(dataset), batch_size=7):
            features.append(encoder(stream.to_encoder(images) if stream.on_device else images).double())
            labels.append(torch.as_tensor(targets).double())
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def test_frozen_classifier_is_a_linear_probe_equal_to_a_newton_fit(tmp_path):
    container = classifier(tmp_path, num_epochs=3, label_fraction=0.5)
    result = train(container, "DemoClassifier")
    run = result.folder.root

    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0] and list(metrics["step"]) == [1]  # one fit, then stopped (not 3 epochs)
    assert metrics[f"{METRIC_PREFIX}/probe_converged"].iloc[0] == 1
    chosen_l2 = float(metrics[f"{METRIC_PREFIX}/probe_l2"].iloc[0])
    assert any(np.isclose(chosen_l2, container.linear_probe_l2_grid, rtol=1e-6))
    predictions = pd.read_csv(run / "test_predictions.csv")
    assert (run / "charts" / "test_roc.png").is_file() and result.folder.best_checkpoint.is_file()

    # The same subset and images, embedded by the checkpoint's (frozen, random) encoder outside innerssl's code.
    datamodule = container.create_datamodule()
    state = load_checkpoint(result.folder.best_checkpoint)["state_dict"]
    encoder = container.create_encoder()
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    splits, stream = datamodule.splits, datamodule.eval_stream
    train_set, val_set, test_set = (
        plain_embeddings(encoder, getattr(splits, split), stream) for split in ("train", "val", "test")
    )
    full_train_size = len(classifier(tmp_path, label_fraction=1.0).create_datamodule().splits.train)
    assert len(train_set[1]) == result.num_train_images < full_train_size

    # At the probe's L2 strength the converged fits agree image by image on the test split ...
    at_chosen = reference_probe(train_set, val_set, (chosen_l2,))
    expected = 1 / (1 + np.exp(-at_chosen.logits(test_set[0])))
    np.testing.assert_allclose(predictions["probability"].to_numpy(), expected, atol=2e-3)
    np.testing.assert_array_equal(predictions["target"].to_numpy(), test_set[1])
    # ... the probe's strength is the reference's best on validation AUROC ...
    own_choice = reference_probe(train_set, val_set, tuple(container.linear_probe_l2_grid))
    assert own_choice.val_aurocs[own_choice.l2] - at_chosen.val_aurocs[chosen_l2] < 1e-9
    # ... and the run's test AUROC is within 0.02 of the reference's own choice's.
    reference_auroc = auroc(own_choice.logits(test_set[0]), test_set[1])
    assert abs(result.test_metrics["classifier/test_auroc"] - reference_auroc) <= 0.02
    recomputed = classification_metrics(torch.tensor(expected), torch.tensor(test_set[1]), splits.label_info)
    assert abs(recomputed["auroc"] - result.test_metrics["classifier/test_auroc"]) < 1e-6


def test_augmented_passes_add_augmented_embeddings_of_the_training_images(tmp_path, caplog):
    container = classifier(tmp_path, num_epochs=1, linear_probe_augmented_passes=2)
    with caplog.at_level("INFO", logger="innerssl"):
        result = train(container, "DemoClassifier")
    assert f"Linear probe on {3 * result.num_train_images} training embeddings" in caplog.text
    assert 0 <= result.test_metrics["classifier/test_auroc"] <= 1
