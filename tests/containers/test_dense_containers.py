"""The restoration and segmentation containers: the chosen pretext task's flags only, and one-line refusals of
settings that cannot train (each naming the flag to change)."""

from __future__ import annotations

import pytest

from configs.biapy import TIF2D_MAE, TIF2D_Crappify, TIF2D_Segmentation, TIF3D_Crappify
from innerssl.containers.restoration import RestorationContainer
from innerssl.errors import UserError


def test_a_container_carries_only_its_pretext_tasks_flags():
    crappify = RestorationContainer.for_task("crappify").parameters()
    masking = RestorationContainer.for_task("masking").parameters()
    assert "crappify_noise" in crappify and "mae_mask_type" not in crappify
    assert "mae_mask_type" in masking and "crappify_noise" not in masking
    container = TIF2D_Crappify()
    container.apply_flags({"pretext_task": "masking", "mae_mask_type": "grid", "network": "vit_mae"})
    assert container.task_arguments() == {"mask_type": "grid", "mask_ratio": 0.5}
    assert TIF2D_MAE().task_arguments()["mask_type"] == "random"


def test_a_flag_of_the_other_task_says_which_task_has_it():
    with pytest.raises(UserError, match="--pretext_task=masking"):
        TIF2D_Crappify().apply_flags({"mae_mask_ratio": "0.75"})


def test_a_misspelt_task_parameter_in_a_thin_config_is_refused_not_ignored():
    class NoisyCrappify(TIF2D_Crappify):
        crappify_nosie = 0.3  # a typo of crappify_noise: silently training with the default would be wrong

    with pytest.raises(
        UserError, match=r"NoisyCrappify sets crappify_nosie, .*pretext task\. Did you mean crappify_noise\?"
    ):
        NoisyCrappify()

    class Quieter(TIF2D_Crappify):
        crappify_noise = 0.05

    assert Quieter().task_arguments()["noise"] == 0.05


@pytest.mark.parametrize(
    ("container", "flags", "message"),
    [
        (TIF2D_Crappify, {"normalisation": "zero_mean_unit_variance"}, "--normalisation"),
        (TIF2D_Crappify, {"network": "vit_mae"}, "masking"),
        (TIF2D_MAE, {"network": "unet"}, "--network=vit_mae"),
        (TIF2D_Crappify, {"patch_size": "64,64,64"}, "--patch_size"),
        (TIF2D_Crappify, {"test_padding": "64"}, "--test_padding"),
        (TIF2D_Crappify, {"crappify_resizing_factor": "3"}, "--crappify_resizing_factor"),
        (TIF2D_Crappify, {"network": "no_such_net"}, "Unknown dense network"),
        (TIF3D_Crappify, {"channels_last": "true"}, "--channels_last"),
        (TIF2D_Segmentation, {"freeze_encoder": "true"}, "--local_weights_path"),
        (TIF2D_Segmentation, {"network": "vit_mae"}, "unetr"),
        (TIF2D_Segmentation, {"label_mapping": "0-1"}, "--label_mapping"),
        (TIF2D_Segmentation, {"compare_with_random_init": "true"}, "--local_weights_path"),
    ],
)
def test_settings_that_cannot_train_are_refused_with_the_flag_to_change(container, flags, message):
    with pytest.raises(UserError, match=message):
        instance = container()
        instance.apply_flags(flags)
        instance.validate(check_this_machine=False)


def test_a_missing_dataset_folder_names_the_flag():
    container = TIF2D_Crappify()
    with pytest.raises(UserError, match="--local_dataset"):
        container.create_datamodule()


def test_an_ssl_checkpoint_is_not_a_restoration_checkpoint(tmp_path):
    import torch

    from innerssl.containers.segmentation import restoration_checkpoint
    from innerssl.outputs.checkpoints import CHECKPOINT_KEY

    path = tmp_path / "ssl.ckpt"
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {"kind": "ssl", "encoder_prefix": "encoder."}}, path)
    with pytest.raises(UserError, match="ssl checkpoint, not a restoration run's"):
        restoration_checkpoint(str(path))
