"""One tiny demo run per new SSL method: the runner trains it, and the classifier's loader finds its encoder."""

import pandas as pd
import pytest
import torch

from innerssl.encoders import create_encoder
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint, load_checkpoint
from innerssl.runner import main
from tests.conftest import tiny_classifier_flags, tiny_demo_flags

# method, the documented downstream encoder's state_dict prefix, extra flags
CASES = [
    ("DINO", "teacher_encoder.", ["--dino_output_dim=64", "--dino_num_local_crops=0"]),  # two-view DINO
    ("VICReg", "encoder.", ["--optimizer=lars", "--learning_rate=0.1", "--weight_decay=1e-4"]),
    ("BarlowTwins", "encoder.", []),
    ("MoCoV3", "momentum_encoder.", []),
]


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize(("method", "prefix", "extra"), CASES, ids=[case[0] for case in CASES])
def test_tiny_demo_run_writes_a_checkpoint_with_the_downstream_encoder(method, prefix, extra, tmp_path, dataset_cache):
    flags = tiny_demo_flags(tmp_path, num_epochs=1, dataset_cache_dir=dataset_cache)
    assert main([f"--model=Demo{method}", *flags, *extra]) == 0
    last = tmp_path / "outputs" / f"Demo{method}" / "test" / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["innerssl"]["method"] == method
    assert checkpoint["global_step"] > 0

    state = encoder_state_from_ssl_checkpoint(last, "resnet18", 1)
    create_encoder("resnet18", 1).load_state_dict(state)  # strict: exactly a resnet18 encoder's keys
    for name, tensor in state.items():
        assert torch.equal(tensor, checkpoint["state_dict"][prefix + name]), name
    if prefix != "encoder.":  # an EMA target: not the online encoder, which the optimizer moved elsewhere
        online = checkpoint["state_dict"]["encoder.network.conv1.weight"]
        assert not torch.equal(state["network.conv1.weight"], online)
    if "--optimizer=lars" in extra:
        assert checkpoint["hyper_parameters"]["optimizer_name"] == "lars"
        assert len(checkpoint["optimizer_states"][0]["param_groups"]) == 2


@pytest.mark.parametrize("augment_on_device", [True, False], ids=["on_device", "per_sample"])
def test_dino_multi_crop_run_writes_a_checkpoint_whose_encoder_the_classifier_loads(
    augment_on_device, tmp_path, dataset_cache
):
    flags = tiny_demo_flags(tmp_path, num_epochs=1, dataset_cache_dir=dataset_cache)
    multi_crop = ["--dino_output_dim=64", "--dino_num_local_crops=2", "--dino_global_crop_scale=0.4,1"]
    assert main(["--model=DemoDINO", *flags, *multi_crop, f"--augment_on_device={augment_on_device}"]) == 0
    run = tmp_path / "outputs" / "DemoDINO" / "test"
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["hyper_parameters"]["num_local_crops"] == 2
    assert checkpoint["global_step"] > 0
    metrics = pd.read_csv(run / "metrics.csv")
    for column in ("ssl/train_loss", "ssl/val_loss", "linear_head/val_auroc", "knn/val_auroc"):
        assert metrics[column].notna().all(), column

    classifier_flags = tiny_classifier_flags(
        tmp_path, num_epochs=1, dataset_cache_dir=dataset_cache, local_weights_path=last, freeze_encoder="true"
    )
    assert main(["--model=DemoClassifier", *classifier_flags]) == 0
    classifier = load_checkpoint(tmp_path / "outputs" / "DemoClassifier" / "test" / "checkpoints" / "last.ckpt")
    teacher = encoder_state_from_ssl_checkpoint(last, "resnet18", 1)
    for name, tensor in teacher.items():  # the frozen classifier encoder is DINO's teacher, bit for bit
        assert torch.equal(classifier["state_dict"]["encoder." + name], tensor), name
