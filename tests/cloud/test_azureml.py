"""Azure ML command jobs built offline with azure-ai-ml entities, dry runs, and the one-line errors. No network."""

from __future__ import annotations

import builtins
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed: pip install -e '.[test]' (or '.[azure]')")

from azure.ai.ml import load_job  # noqa: E402
from azure.ai.ml._utils._asset_utils import get_ignore_file  # noqa: E402
from azure.ai.ml.entities import Environment  # noqa: E402
from azure.core.exceptions import ClientAuthenticationError  # noqa: E402

from innerssl.cloud import azureml  # noqa: E402
from innerssl.cloud.parameters import DEFAULT_DOCKER_IMAGE  # noqa: E402
from innerssl.errors import UserError  # noqa: E402
from innerssl.registry import find_model  # noqa: E402
from innerssl.runner import main, parse_flags  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

SINGLE_GPU = [
    "--num_epochs=5",
    "--azureml",
    "--azureml_compute_cluster=gpu-t4",
    "--azureml_dataset=cifar10:3",
    "--azureml_dataset_mode=download",
    "--azureml_tags=team=ssl,purpose=smoke",
]
MULTI_NODE = [
    "--num_epochs=3",
    "--label_names=Pneumonia",
    "--azureml",
    "--azureml_compute_cluster=gpu-a100",
    "--azureml_instance_count=2",
    "--azureml_processes_per_instance=4",
    "--azureml_environment=innerssl-gpu@latest",
    "--azureml_experiment=cxr-pretraining",
    "--azureml_dataset=nih_cxr:1",
    "--azureml_extra_datasets=azureml://datastores/workspaceblobstore/paths/rsna/",
]


def build(model: str, argv: list[str]) -> tuple[object, object]:
    """Container and job as the runner builds them: flags applied, then validated as inside the job."""
    flags = parse_flags(argv)
    container = find_model(model)()
    container.apply_flags(flags)
    azureml.check_job_flags(container, flags)
    azureml.validate_for_job(container)
    return container, azureml.build_command_job(container, model, flags, REPO_ROOT)


def spec(job: object) -> dict:
    """The job as the SDK serialises it for `az ml job create`, after the SDK's own validation."""
    job._validate(raise_error=True)  # schema validation of the command node
    standalone = job._to_job()
    standalone._validate()  # the job's own checks: command, environment, inputs the command binds
    return standalone._to_dict()


def no_azureml_flags(command: str) -> None:
    assert "azureml" not in command
    assert "--pretraining_run_id" not in command


def test_single_gpu_job_specification():
    container, job = build("CIFAR10BYOL", SINGLE_GPU)
    data = spec(job)
    command = data["command"]
    assert command.startswith("python runner.py --model=CIFAR10BYOL --num_epochs=5 ")
    assert "--local_dataset=${{inputs.dataset}}" in command
    assert "--output_dir=${{outputs.outputs}}" in command
    assert "--max_num_gpus=1" in command and "--num_nodes=1" in command
    assert "extra_local_dataset_paths" not in command
    no_azureml_flags(command)
    assert data["inputs"] == {"dataset": {"type": "uri_folder", "path": "azureml:cifar10:3", "mode": "download"}}
    assert data["outputs"] == {"outputs": {"type": "uri_folder"}}
    assert "distribution" not in data
    assert data["resources"]["instance_count"] == 1
    assert data["compute"] == "azureml:gpu-t4"
    assert data["experiment_name"] == "CIFAR10BYOL"
    assert data["display_name"] == "CIFAR10BYOL"
    assert data["tags"] == {"model": "CIFAR10BYOL", "team": "ssl", "purpose": "smoke"}
    assert Path(data["code"]) == REPO_ROOT
    # Environment: environment.yml on the GPU base image, without its editable install of the repository.
    assert isinstance(job.environment, Environment)
    assert data["environment"]["image"] == DEFAULT_DOCKER_IMAGE
    conda = data["environment"]["conda_file"]
    pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert any(r.startswith("torch>=") for r in pip)
    assert not any(r.startswith("-e") for r in pip)
    # Validation ran against stand-ins; the container's own values are back.
    assert container.local_dataset is None


def test_two_nodes_by_four_gpus_job_specification():
    _, job = build("NIH_RSNA_BYOL", MULTI_NODE)
    data = spec(job)
    command = data["command"]
    assert command.startswith("python runner.py --model=NIH_RSNA_BYOL --num_epochs=3 --label_names=Pneumonia ")
    assert "--local_dataset=${{inputs.dataset}}" in command
    assert "--extra_local_dataset_paths=${{inputs.extra_dataset_0}}" in command
    assert "--max_num_gpus=4" in command and "--num_nodes=2" in command
    assert "--output_dir=${{outputs.outputs}}" in command
    no_azureml_flags(command)
    assert data["inputs"] == {
        "dataset": {"type": "uri_folder", "path": "azureml:nih_cxr:1", "mode": "ro_mount"},
        "extra_dataset_0": {
            "type": "uri_folder",
            "path": "azureml://datastores/workspaceblobstore/paths/rsna/",
            "mode": "ro_mount",
        },
    }
    assert data["distribution"] == {"type": "pytorch", "process_count_per_instance": 4}
    assert data["resources"]["instance_count"] == 2
    assert data["environment"] == "azureml:innerssl-gpu@latest"
    assert data["compute"] == "azureml:gpu-a100"
    assert data["experiment_name"] == "cxr-pretraining"
    assert data["tags"] == {"model": "NIH_RSNA_BYOL"}


def test_dry_run_writes_yaml_that_the_sdk_loads_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [*MULTI_NODE, "--azureml_dry_run", f"--output_dir={tmp_path / 'outputs'}", "--precision=16-mixed"]
    assert main(["--model=NIH_RSNA_BYOL", *argv]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "outputs" / "NIH_RSNA_BYOL" / "azureml_job.yaml"
    text = path.read_text()
    assert text.startswith("$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json")
    assert text in out and "nothing was submitted" in out

    loaded = spec(load_job(path))
    _, job = build("NIH_RSNA_BYOL", [*MULTI_NODE, "--precision=16-mixed"])
    expected = spec(job)
    for key in ("command", "inputs", "outputs", "distribution", "environment", "compute", "experiment_name", "tags"):
        # Each job gets its own run name (the submission time, to the second): compare the rest.
        assert without_run_name(loaded[key]) == without_run_name(expected[key]), key
    assert loaded["resources"]["instance_count"] == 2
    assert "--precision=16-mixed" in loaded["command"]
    assert "--output_dir=${{outputs.outputs}}" in loaded["command"] and str(tmp_path) not in loaded["command"]


def test_dry_run_needs_no_compute_and_builds_the_environment_from_environment_yml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=DemoBYOL", "--azureml_dry_run", f"--output_dir={tmp_path}"]) == 0
    loaded = spec(load_job(tmp_path / "DemoBYOL" / "azureml_job.yaml"))
    assert loaded["environment"]["image"] == DEFAULT_DOCKER_IMAGE
    assert loaded["inputs"] == {}
    assert "compute" not in loaded
    assert "needs one to be submitted" in capsys.readouterr().out


def test_config_module_inside_the_repository_is_passed_relative(tmp_path):
    flags = {"config_module": str(REPO_ROOT / "configs" / "demo.py"), "num_epochs": "2"}
    container = find_model("DemoBYOL")()
    container.apply_flags({"num_epochs": "2"})
    command = azureml.job_command(container, "DemoBYOL", flags, REPO_ROOT)
    assert "--config_module=configs/demo.py" in command
    outside = tmp_path / "mine.py"
    with pytest.raises(UserError, match="outside the repository"):
        azureml.job_command(container, "DemoBYOL", {"config_module": str(outside)}, REPO_ROOT)


def without_run_name(value):
    if not isinstance(value, str):
        return value
    return " ".join(part for part in value.split() if not part.startswith("--run_name="))


def test_a_job_has_a_fixed_run_name_and_resumes_itself_after_a_preemption():
    container = find_model("DemoBYOL")()
    parts = azureml.job_command(container, "DemoBYOL", {"num_epochs": "3"}, REPO_ROOT).split()
    (run_name,) = (part for part in parts if part.startswith("--run_name="))
    assert len(run_name) > len("--run_name=") and "--auto_resume" in parts
    # The user's run name is kept, and an explicit --resume is not doubled by --auto_resume.
    parts = azureml.job_command(container, "DemoBYOL", {"run_name": "r7", "resume": None}, REPO_ROOT).split()
    assert [p for p in parts if p.startswith("--run_name")] == ["--run_name=r7"] and "--auto_resume" not in parts


def test_a_shared_output_path_is_mounted_read_write(tmp_path):
    path = "azureml://datastores/workspaceblobstore/paths/innerssl"
    _, job = build("CIFAR10BYOL", ["--azureml_dataset=cifar10:1", f"--azureml_output_path={path}"])
    data = spec(job)
    assert data["outputs"] == {"outputs": {"type": "uri_folder", "path": path, "mode": "rw_mount"}}
    with pytest.raises(UserError, match="is not a datastore folder"):
        build("CIFAR10BYOL", ["--azureml_dataset=cifar10:1", "--azureml_output_path=/tmp/here"])


def test_values_with_spaces_are_quoted_for_the_shell():
    container = find_model("DemoBYOL")()
    command = azureml.job_command(container, "DemoBYOL", {"run_name": "my run", "resume": None}, REPO_ROOT)
    assert "'--run_name=my run' --resume " in command


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_missing_workspace_configuration_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in azureml.WORKSPACE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert main(["--model=DemoBYOL", "--azureml", "--azureml_compute_cluster=gpu"]) == 2
    err = one_line_error(capsys)
    assert "config.json" in err
    for name in azureml.WORKSPACE_ENV_VARS:
        assert name in err


def test_workspace_from_environment_variables_or_config_json(tmp_path, monkeypatch):
    pytest.importorskip("azure.identity", reason="azure-identity is in the azure extra")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg-env")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "ws-env")
    client = azureml.ml_client()  # builds the client only: no token is requested, nothing is contacted
    assert (client.resource_group_name, client.workspace_name) == ("rg-env", "ws-env")
    nested = tmp_path / "project" / "sub"
    nested.mkdir(parents=True)
    (tmp_path / "project" / "config.json").write_text(
        '{"subscription_id": "11111111-1111-1111-1111-111111111111", "resource_group": "rg-file", '
        '"workspace_name": "ws-file"}'
    )
    (nested / "config.json").write_text('{"unrelated": true}')
    monkeypatch.chdir(nested)
    assert azureml.find_workspace_config() == tmp_path / "project" / "config.json"
    client = azureml.ml_client()
    assert (client.resource_group_name, client.workspace_name) == ("rg-file", "ws-file")


def test_missing_azure_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_azure(name, *args, **kwargs):
        if name == "azure" or name.startswith("azure."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_azure)
    assert main(["--model=DemoBYOL", "--azureml_dry_run", f"--output_dir={tmp_path}"]) == 2
    assert one_line_error(capsys) == 'error: --azureml needs the azure extra: pip install -e ".[azure]"\n'


def test_submission_flag_mistakes_are_one_line_errors(tmp_path, capsys):
    cases = {
        "--azureml_compute_cluster": ["--azureml"],
        "--azureml_dataset": ["--azureml_dry_run", f"--local_dataset={tmp_path}"],
        "--azureml_instance_count": ["--azureml_dry_run", "--num_nodes=3"],
        "is not key=value": ["--azureml_dry_run", "--azureml_tags=oops"],
        "is not a data asset": ["--azureml_dry_run", "--azureml_dataset=not a/dataset?"],
        "for classifier models": ["--azureml_dry_run", "--pretraining_run_id=job_1"],
    }
    for expected, argv in cases.items():
        assert main(["--model=DemoBYOL", f"--output_dir={tmp_path}", *argv]) == 2, argv
        assert expected in one_line_error(capsys), argv


def test_submit_prints_job_name_and_studio_url(capsys):
    created = SimpleNamespace(name="keen_lamp_42", experiment_name="DemoBYOL", studio_url="https://ml.azure.com/runs/x")
    client = SimpleNamespace(jobs=SimpleNamespace(create_or_update=lambda job: created))
    assert azureml.submit(object(), client=client) == "keen_lamp_42"
    out = capsys.readouterr().out
    assert "keen_lamp_42" in out and "https://ml.azure.com/runs/x" in out


def test_submit_sign_in_failure_is_a_user_error():
    def refuse(job):
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token\nmore details")

    client = SimpleNamespace(jobs=SimpleNamespace(create_or_update=refuse))
    with pytest.raises(UserError, match="az login") as error:
        azureml.submit(object(), client=client)
    assert "\n" not in str(error.value)


def test_classifier_job_mounts_the_pretraining_outputs():
    argv = ["--azureml_dry_run", "--pretraining_run_id=ssl_job_7", "--azureml_dataset=rsna:2"]
    container, job = build("CXRImageClassifier", argv)
    data = spec(job)
    assert data["inputs"]["pretraining"] == {
        "type": "uri_folder",
        "path": "azureml://jobs/ssl_job_7/outputs/outputs",
        "mode": "ro_mount",
    }
    assert "--pretraining_outputs_folder=${{inputs.pretraining}}" in data["command"]
    assert data["tags"]["pretraining_run_id"] == "ssl_job_7"
    no_azureml_flags(data["command"])
    assert container.local_weights_path is None


def fake_download_client(tmp_path: Path, with_checkpoint: bool) -> SimpleNamespace:
    def download(name, download_path, output_name):
        assert (name, output_name) == ("ssl_job_7", "outputs")
        folder = Path(download_path) / "named-outputs" / "outputs" / "NIH_RSNA_BYOL" / "run1" / "checkpoints"
        folder.mkdir(parents=True)
        if with_checkpoint:
            (folder / "last.ckpt").write_bytes(b"checkpoint")

    return SimpleNamespace(jobs=SimpleNamespace(download=download))


def test_download_pretraining_checkpoint(tmp_path):
    client = fake_download_client(tmp_path, with_checkpoint=True)
    path = azureml.download_pretraining_checkpoint("ssl_job_7", tmp_path / "a", client=client)
    assert path.name == "last.ckpt" and path.parent.name == "checkpoints" and path.is_file()
    # Downloaded before: reused without contacting Azure.
    assert azureml.download_pretraining_checkpoint("ssl_job_7", tmp_path / "a", client=None) == path
    with pytest.raises(UserError, match="No checkpoints/last.ckpt in the outputs of Azure ML job ssl_job_7"):
        azureml.download_pretraining_checkpoint("ssl_job_7", tmp_path / "b", fake_download_client(tmp_path, False))


def test_local_classifier_run_uses_the_pretraining_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(azureml, "ml_client", lambda: fake_download_client(tmp_path, with_checkpoint=True))
    container = find_model("CXRImageClassifier")()
    container.apply_flags({"pretraining_run_id": "ssl_job_7", "output_dir": str(tmp_path)})
    assert azureml.dispatch(container, "CXRImageClassifier", {}) is False
    expected = tmp_path / "CXRImageClassifier" / "pretraining" / "ssl_job_7"
    assert Path(container.local_weights_path).is_relative_to(expected)
    # Inside a job: the mounted outputs folder.
    mounted = tmp_path / "mount" / "Model" / "run" / "checkpoints"
    mounted.mkdir(parents=True)
    (mounted / "last.ckpt").write_bytes(b"checkpoint")
    container = find_model("CXRImageClassifier")()
    container.apply_flags({"pretraining_outputs_folder": str(tmp_path / "mount")})
    assert azureml.dispatch(container, "CXRImageClassifier", {}) is False
    assert container.local_weights_path == str(mounted / "last.ckpt")


def test_amlignore_leaves_environments_outputs_and_caches_out_of_the_snapshot():
    ignore = get_ignore_file(REPO_ROOT)
    assert Path(ignore.path) == REPO_ROOT / ".amlignore"
    for excluded in (
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "outputs/DemoBYOL/run/checkpoints/last.ckpt",
        ".git/HEAD",
        "innerssl/__pycache__/runner.cpython-311.pyc",
        "tests/test_runner.py",
        "lightning_logs/version_0/events",
        "config.json",
    ):
        assert ignore.is_file_excluded(REPO_ROOT / excluded), excluded
    for included in (
        "runner.py",
        "environment.yml",
        "innerssl/runner.py",
        "innerssl/data/datasets/nih.py",
        "configs/cxr.py",
        "augmentations/cxr_ssl_encoder_augmentations.yaml",
    ):
        assert not ignore.is_file_excluded(REPO_ROOT / included), included


def test_local_runs_never_import_azure():
    script = textwrap.dedent(
        """
        import sys
        from innerssl.registry import find_model
        from innerssl.runner import submitted_or_prepared
        container = find_model("DemoBYOL")()
        container.apply_flags({"num_epochs": "2"})
        assert submitted_or_prepared(container, "DemoBYOL", {"num_epochs": "2"}, None) is False
        loaded = sorted(m for m in sys.modules if m == "azure" or m.startswith("azure."))
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=300)


def test_a_datalist_goes_into_a_job_relative_to_its_dataset(tmp_path):
    volumes = ["--azureml", "--azureml_compute_cluster=gpu-t4", "--azureml_dataset=hippocampus:1"]
    _container, job = build("Hippocampus_UNETR", [*volumes, "--datalist=dataset.json"])
    command = spec(job)["command"]
    assert "--local_dataset=${{inputs.dataset}}" in command and "--datalist=dataset.json" in command
    with pytest.raises(UserError, match="is a file on this machine.*relative to that folder"):
        build("Hippocampus_UNETR", [*volumes, f"--datalist={tmp_path / 'dataset.json'}"])
