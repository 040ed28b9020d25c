"""The classifier's test stage: test metrics, per-image predictions and ROC chart, and --test_only_checkpoint."""

import pandas as pd

from innerssl.registry import find_model
from innerssl.training import train
from tests.conftest import tiny_classifier_flags


def classifier(tmp_path, **overrides):
    container = find_model("DemoClassifier", [])()
    flags = dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, num_epochs=1, **overrides))
    container.apply_flags(flags)
    return container


def test_classifier_run_evaluates_its_best_checkpoint_on_the_test_split(tmp_path):
    container = classifier(tmp_path)
    result = train(container, "DemoClassifier")
    test_size = len(container.create_datamodule().splits.test)
    assert 0 <= result.test_metrics["classifier/test_auroc"] <= 1
    assert {"classifier/test_auprc", "classifier/test_accuracy"} <= result.test_metrics.keys()
    predictions = pd.read_csv(result.folder.root / "test_predictions.csv")
    assert len(predictions) == test_size and list(predictions["index"]) == list(range(test_size))
    assert predictions["probability"].between(0, 1).all() and set(predictions["target"]) <= {0, 1}
    assert (result.folder.root / "charts" / "test_roc.png").is_file()

    again = classifier(tmp_path, run_name="test_only", test_only_checkpoint=result.folder.best_checkpoint)
    evaluated = train(again, "DemoClassifier")
    assert evaluated.test_metrics == result.test_metrics
    assert not evaluated.folder.last_checkpoint.exists()
    assert len(pd.read_csv(evaluated.folder.root / "test_predictions.csv")) == test_size
