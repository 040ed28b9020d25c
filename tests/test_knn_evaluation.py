"""The comparison's kNN mode: the kNN monitor's votes on the test split, written as a classifier run is."""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import DataLoader

from innerssl.eval.knn import knn_vote_probabilities
from innerssl.knn_evaluation import run_knn_evaluation
from innerssl.registry import find_model
from tests.conftest import tiny_classifier_flags


def classifier(tmp_path, **overrides):
    container = find_model("DemoClassifier", [])()
    flags = dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, **overrides))
    container.apply_flags(flags)
    return container


def embeddings(encoder, dataset, stream) -> tuple[torch.Tensor, torch.Tensor]:
    encoder.eval()
    features, labels = [], []
    with torch.no_grad():
        for images, targets in DataLoader(stream.loader_dataset(dataset), batch_size=5):
            features.append(encoder(stream.to_encoder(images) if stream.on_device else images))
            labels.append(torch.as_tensor(targets))
    return torch.cat(features), torch.cat(labels)


def test_knn_run_classifies_the_test_split_by_the_votes_of_the_training_subset(tmp_path):
    container = classifier(tmp_path, label_fraction=0.5, knn_k=5)
    result = run_knn_evaluation(container, "DemoClassifier")
    run = result.folder.root
    for name in ("config.yaml", "log.txt", "metrics.csv", "test_predictions.csv", "charts/test_roc.png"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 1 and metrics["classifier/val_auroc"].between(0, 1).all()
    assert result.best_value == metrics["classifier/val_auroc"].iloc[0]
    assert set(result.test_metrics) == {"classifier/test_auroc", "classifier/test_auprc", "classifier/test_accuracy"}

    datamodule = container.create_datamodule()
    splits, stream = datamodule.splits, datamodule.eval_stream
    assert result.num_train_images == len(splits.train) < len(classifier(tmp_path).create_datamodule().splits.train)
    encoder = container.create_encoder()
    bank, bank_labels = embeddings(encoder, splits.train, stream)
    queries, targets = embeddings(encoder, splits.test, stream)
    expected = knn_vote_probabilities(queries, bank, bank_labels, splits.label_info, k=5, temperature=0.07)
    predictions = pd.read_csv(run / "test_predictions.csv")
    torch.testing.assert_close(torch.tensor(predictions["probability"].to_numpy()).float(), expected, atol=1e-5, rtol=0)
    assert predictions["target"].tolist() == targets.tolist()


def test_the_random_encoder_is_the_same_in_every_mode_and_depends_on_the_seed(tmp_path):
    container = classifier(tmp_path)
    datamodule = container.create_datamodule()
    torch.manual_seed(123)  # whatever drew from the global stream before must not matter
    frozen = container.create_lightning_module(datamodule).encoder.state_dict()
    knn = container.create_encoder().state_dict()
    assert all(torch.equal(frozen[name], knn[name]) for name in frozen)
    container.random_seed += 1
    other = container.create_encoder().state_dict()
    assert not torch.equal(other["network.conv1.weight"], knn["network.conv1.weight"])
