import pytest
import torch

from configs.demo import DemoDINO
from innerssl.augment.views import ViewGroup
from innerssl.errors import UserError
from innerssl.ssl import ssl_method
from innerssl.ssl.dino import DINO
from tests.ssl.fixed_batch import downstream_state_keys, fixed_views, losses_of_steps


def tiny_dino(**kwargs) -> DINO:
    """A small DINO; two-view (no local crops) unless ``num_local_crops`` says otherwise."""
    kwargs.setdefault("num_local_crops", 0)
    return DINO(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def test_teacher_starts_as_the_student_and_gets_no_gradients():
    torch.manual_seed(0)
    model = tiny_dino(output_dim=128)
    for online, teacher in model.momentum_pairs():
        assert all(not p.requires_grad for p in teacher.parameters())
        for (name, a), b in zip(online.state_dict().items(), teacher.state_dict().values()):
            assert torch.equal(a, b), name
    view0, view1 = fixed_views()
    model.ssl_loss(view0, view1).backward()
    assert all(p.grad is None for p in [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()])
    assert model.encoder.network.conv1.weight.grad is not None


def test_ema_update_matches_formula_and_momentum_follows_the_cosine_schedule():
    torch.manual_seed(0)
    model = tiny_dino(output_dim=128, base_momentum=0.9)
    with torch.no_grad():
        for parameter in [*model.encoder.parameters(), *model.student_head.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    names = [("encoder", "network.conv1.weight"), ("head", "last_layer.weight_v"), ("head", "layers.0.weight")]
    modules = {"encoder": (model.encoder, model.teacher_encoder), "head": (model.student_head, model.teacher_head)}
    before = {(m, n): (modules[m][0].state_dict()[n].clone(), modules[m][1].state_dict()[n].clone()) for m, n in names}
    model.update_target(0.8)
    for (module, name), (student, teacher) in before.items():
        expected = 0.8 * teacher + 0.2 * student
        assert torch.allclose(modules[module][1].state_dict()[name], expected, atol=1e-6), name
    for fraction, momentum in ((0.0, 0.9), (0.5, 0.95), (1.0, 1.0)):
        model._fraction_at_step_start = fraction
        assert model.current_momentum() == pytest.approx(momentum)


def test_downstream_encoder_is_the_teacher_encoder():
    model = tiny_dino(output_dim=64)
    assert model.embedding_encoder() is model.teacher_encoder
    prefix = model.embedding_encoder_prefix()
    assert prefix == "teacher_encoder."
    assert downstream_state_keys(model, prefix) == set(model.teacher_encoder.state_dict())
    assert model.teacher_encoder is not model.encoder


def test_validation_leaves_the_teacher_center_alone():
    model = tiny_dino(output_dim=64)
    view0, view1 = fixed_views()
    center = model.criterion.center.clone()
    model.eval()
    with torch.no_grad():
        model.ssl_loss(view0, view1)
    assert torch.equal(model.criterion.center, center)
    model.train()
    model.ssl_loss(view0, view1)
    assert not torch.equal(model.criterion.center, center)


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    losses = losses_of_steps(tiny_dino(output_dim=256))
    assert losses[-1] < losses[0] * 0.8


def test_container_passes_the_dino_parameters():
    container = DemoDINO(
        dino_output_dim=64,
        dino_teacher_temperature=0.05,
        dino_student_temperature=0.2,
        dino_base_momentum=0.95,
        projection_hidden_dim=32,
        projection_dim=16,
    )
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    assert isinstance(model, DINO)
    assert model.hparams.base_momentum == 0.95 and model.hparams.teacher_temperature == 0.05
    assert model.criterion.student_temp == 0.2 and model.criterion.center.shape[-1] == 64
    assert model.student_head.last_layer.weight_v.shape == (64, 16)


def test_container_passes_the_multi_crop_parameters_to_the_method_and_its_views_to_the_stream(tmp_path):
    container = DemoDINO(
        dino_output_dim=64,
        projection_hidden_dim=32,
        projection_dim=16,
        dino_num_local_crops=3,
        dino_local_crop_size=0.5,
        dino_local_crop_scale=[0.1, 0.3],
        dino_global_crop_scale=[0.5, 1.0],
        demo_num_images=20,
        demo_image_size=32,
        dataset_cache_dir=str(tmp_path),
        linear_head_dataset_name=None,
    )
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    expected = (
        ViewGroup(2, crop_scale=(0.5, 1.0), role="global"),
        ViewGroup(3, size=0.5, crop_scale=(0.1, 0.3), role="local"),
    )
    assert model.declared_views == expected
    assert container.create_datamodule().ssl_stream.view_groups == expected
    assert DemoDINO(dino_num_local_crops=0).method_hyperparameters()["num_local_crops"] == 0
    assert DemoDINO().method_hyperparameters()["global_crop_scale"] == []  # empty: the config's crop scale


# --- multi-crop ------------------------------------------------------------------------------------------------
def test_views_are_two_global_crops_and_the_local_crops_the_hyperparameters_ask_for():
    assert DINO.view_groups() == (
        ViewGroup(2, role="global"),
        ViewGroup(6, size=0.43, crop_scale=(0.05, 0.4), role="local"),
    )
    groups = DINO.view_groups({"num_local_crops": 2, "local_crop_size": 96, "global_crop_scale": [0.4, 1.0]})
    assert groups == (
        ViewGroup(2, crop_scale=(0.4, 1.0), role="global"),
        ViewGroup(2, size=96, crop_scale=(0.05, 0.4), role="local"),
    )
    assert DINO.view_groups({"num_local_crops": 0}) == (ViewGroup(2, role="global"),)


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"num_local_crops": -1}, "--dino_num_local_crops"),
        ({"local_crop_size": 0}, "--dino_local_crop_size"),
        ({"local_crop_scale": [0.5, 0.2]}, "--dino_local_crop_scale"),
        ({"local_crop_scale": [0.1]}, "--dino_local_crop_scale"),
        ({"local_crop_scale": []}, "--dino_local_crop_scale"),
        ({"global_crop_scale": [0.4, 1.5]}, "--dino_global_crop_scale"),
    ],
)
def test_bad_multi_crop_settings_are_one_line_errors(hyperparameters, message):
    with pytest.raises(UserError, match=message):
        DINO.view_groups(hyperparameters)


def cross_entropy(teacher: torch.Tensor, student: torch.Tensor, teacher_temp: float, student_temp: float) -> float:
    """Mean over the batch of H(softmax(teacher / t), softmax(student / s)) (the centre is still 0)."""
    targets = torch.softmax(teacher / teacher_temp, dim=-1)
    return float(-(targets * torch.log_softmax(student / student_temp, dim=-1)).sum(-1).mean())


def multi_crop_views(local_crops: int, local_size: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.rand(4, 1, 32, 32, generator=generator) for _ in range(2)] + [
        torch.rand(4, 1, local_size, local_size, generator=generator) for _ in range(local_crops)
    ]


@pytest.mark.parametrize("local_crops", [0, 3])
def test_loss_is_the_mean_over_teacher_global_and_student_other_view_pairs(local_crops):
    torch.manual_seed(0)
    model = tiny_dino(output_dim=64, num_local_crops=local_crops, local_crop_size=16).eval()
    views = multi_crop_views(local_crops)
    with torch.no_grad():
        loss = float(model.ssl_loss(*views))
        student = [model.student_head(model.encoder(view)) for view in views]
        teacher = [model.teacher_head(model.teacher_encoder(view)) for view in views[:2]]
    temperatures = (model.hparams.teacher_temperature, model.hparams.student_temperature)
    pairs = [(t, s) for t in range(2) for s in range(len(views)) if s != t]
    expected = sum(cross_entropy(teacher[t], student[s], *temperatures) for t, s in pairs) / len(pairs)
    assert loss == pytest.approx(expected, rel=1e-4)
    if local_crops == 0:  # two-view DINO: the two global views both ways, as before multi-crop
        both_ways = 0.5 * (
            cross_entropy(teacher[0], student[1], *temperatures) + cross_entropy(teacher[1], student[0], *temperatures)
        )
        assert loss == pytest.approx(both_ways, rel=1e-4)


def test_the_teacher_sees_the_global_views_only_and_the_student_every_view():
    model = tiny_dino(output_dim=64, num_local_crops=2, local_crop_size=16)
    seen: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    model.encoder.register_forward_hook(lambda _m, inputs, _o: seen["student"].append(tuple(inputs[0].shape)))
    model.teacher_encoder.register_forward_hook(lambda _m, inputs, _o: seen["teacher"].append(tuple(inputs[0].shape)))
    model.ssl_loss(*multi_crop_views(2)).backward()
    # One pass per view size: the two global views together, the local crops together.
    assert seen == {"student": [(8, 1, 32, 32), (8, 1, 16, 16)], "teacher": [(8, 1, 32, 32)]}


def test_multi_crop_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_dino(output_dim=256, num_local_crops=2, local_crop_size=16)
    views = multi_crop_views(2)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        model.update_target(0.99)
        loss = model.ssl_loss(*views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9


def test_a_timm_vit_takes_the_local_crops_with_dynamic_image_size():
    # Tiny images: 32 px global views, 16 px local crops, patches of 8 px.
    options = {"img_size": 32, "patch_size": 8, "depth": 2, "dynamic_img_size": True}
    model = DINO(
        encoder_name="timm:vit_tiny_patch16_224",
        in_channels=1,
        encoder_options=options,
        projection_hidden_dim=32,
        projection_dim=16,
        output_dim=64,
        num_local_crops=2,
        local_crop_size=16,
    )
    loss = model.ssl_loss(*multi_crop_views(2))
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(UserError, match="dynamic_img_size=true"):
        DINO(
            encoder_name="timm:vit_tiny_patch16_224",
            in_channels=1,
            encoder_options={"img_size": 32, "patch_size": 8, "depth": 2},
            output_dim=64,
        )
    # Two-view DINO needs one size only.
    DINO(
        encoder_name="timm:vit_tiny_patch16_224",
        in_channels=1,
        encoder_options={"img_size": 32, "patch_size": 8, "depth": 2},
        projection_hidden_dim=32,
        projection_dim=16,
        output_dim=64,
        num_local_crops=0,
    )
