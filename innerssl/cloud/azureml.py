"""Azure ML (SDK v2, ``azure-ai-ml``): the runner's own command as a command job, dry runs, submission, checkpoints.

``--azureml`` submits ``python runner.py --model=NAME <the same flags>`` as a command job: the repository as the
code snapshot (minus what ``.amlignore`` excludes), an environment built from ``environment.yml`` on a GPU base
image (or a registered one), datasets as ``uri_folder`` inputs that the job's ``--local_dataset`` and
``--extra_local_dataset_paths`` point at, and one ``uri_folder`` output that becomes the job's ``--output_dir``.
``--azureml_dry_run`` writes that job as the YAML ``az ml job create --file`` accepts, without contacting Azure.

The Azure SDK is imported inside the functions that need it, so local runs never import it; a missing SDK is a
one-line error naming the extra to install. Nothing secret is printed: credentials come from
DefaultAzureCredential, and only job names and studio URLs are shown.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from innerssl.cloud.parameters import AzureMLParameters
from innerssl.errors import UserError
from innerssl.outputs.run_folder import new_run_name

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Command

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_YAML_NAME = "azureml_job.yaml"
JOB_SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json"
OUTPUT_NAME = "outputs"
DATASET_INPUT = "dataset"
EXTRA_DATASET_INPUT = "extra_dataset_{}"
PRETRAINING_INPUT = "pretraining"
LAST_CHECKPOINT_PATTERN = "checkpoints/last.ckpt"
WORKSPACE_ENV_VARS = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")
WORKSPACE_CONFIG_NAMES = ("config.json", ".azureml/config.json")

MISSING_EXTRA = '--azureml needs the azure extra: pip install -e ".[azure]"'
MISSING_WORKSPACE = (
    "No Azure ML workspace configured: put the workspace's config.json (Azure portal, the workspace's overview "
    "page, 'Download config.json') in the working directory, or set the environment variables "
    + ", ".join(WORKSPACE_ENV_VARS)
)

# Flags that only steer the submission (never passed to the job), and flags the job sets itself.
AZUREML_FLAGS = frozenset(name for name in AzureMLParameters.param if name != "name")
JOB_SET_FLAGS = frozenset({"local_dataset", "extra_local_dataset_paths", "output_dir", "max_num_gpus", "num_nodes"})
_ASSET = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+|@latest)$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# --- SDK access ----------------------------------------------------------------------------------------------
def _sdk() -> Any:
    """The ``azure.ai.ml`` module, or a one-line error saying how to install it."""
    try:
        import azure.ai.ml as sdk
    except ImportError:
        raise UserError(MISSING_EXTRA) from None
    # The SDK logs HTTP traffic at INFO and "experimental class" notes at WARNING: keep the run's log readable.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    return sdk


# --- entry point from the runner -------------------------------------------------------------------------------
def dispatch(container: Any, model_name: str, flags: Mapping[str, str | None], repo_root: Path = REPO_ROOT) -> bool:
    """Act on the Azure ML flags. True: the job was written (dry run) or submitted, nothing is left to run here.

    False: run here; for classifiers with ``--pretraining_run_id`` (or ``--pretraining_outputs_folder``, as set
    inside jobs) ``local_weights_path`` now names that run's ``checkpoints/last.ckpt``.
    """
    if container.azureml_dry_run or container.azureml:
        check_job_flags(container, flags)
        validate_for_job(container)
        if container.azureml and not container.azureml_dry_run and not container.azureml_compute_cluster:
            raise UserError("--azureml needs a compute cluster: add --azureml_compute_cluster=<cluster name>")
        job = build_command_job(container, model_name, flags, repo_root)
        if container.azureml_dry_run:
            write_dry_run(container, model_name, job)
        else:
            submit(job)
        return True
    use_pretraining_checkpoint(container, model_name)
    return False


# --- checks ---------------------------------------------------------------------------------------------------
def _has(container: Any, name: str) -> bool:
    return name in container.parameters()


def check_pretraining(container: Any) -> None:
    if container.pretraining_run_id is None and container.pretraining_outputs_folder is None:
        return
    flag = "--pretraining_run_id" if container.pretraining_run_id is not None else "--pretraining_outputs_folder"
    if not _has(container, "local_weights_path"):
        raise UserError(
            f"{flag} is for classifier models (it sets their --local_weights_path); "
            f"{type(container).__name__} is not one"
        )
    if container.local_weights_path is not None:
        raise UserError(f"Give either {flag} or --local_weights_path, not both")
    if container.pretraining_run_id is not None and not _JOB_NAME.match(container.pretraining_run_id):
        raise UserError(
            f"--pretraining_run_id={container.pretraining_run_id} is not an Azure ML job name "
            "(letters, digits, _ and -): copy the name from the SSL job's page in Azure ML studio"
        )


def check_job_flags(container: Any, flags: Mapping[str, str | None]) -> None:
    """Flags that name things on this machine, or that contradict the job's machines, cannot go into a job."""
    if "local_dataset" in flags:
        raise UserError(
            "--local_dataset is a folder on this machine, which an Azure ML job cannot see: with --azureml give "
            "the data with --azureml_dataset (a data asset name:version, or an azureml:// path)"
        )
    if "extra_local_dataset_paths" in flags:
        raise UserError(
            "--extra_local_dataset_paths are folders on this machine, which an Azure ML job cannot see: with "
            "--azureml give them with --azureml_extra_datasets (data assets name:version, or azureml:// paths)"
        )
    datalist = flags.get("datalist")
    if datalist and Path(datalist).is_absolute():
        raise UserError(
            f"--datalist={datalist} is a file on this machine, which an Azure ML job cannot see: put the JSON in the "
            "--azureml_dataset folder and pass its path relative to that folder"
        )
    for flag in ("local_weights_path", "pretraining_outputs_folder"):
        if flag in flags:
            raise UserError(
                f"--{flag} is on this machine, which an Azure ML job cannot see: with --azureml give the SSL "
                "job's name with --pretraining_run_id"
            )
    for flag, value, setting in (
        ("num_nodes", container.azureml_instance_count, "azureml_instance_count"),
        ("max_num_gpus", container.azureml_processes_per_instance, "azureml_processes_per_instance"),
    ):
        if flag in flags and getattr(container, flag) != value:
            raise UserError(
                f"--{flag}={flags[flag]} does not match --{setting}={value}: with --azureml the machines are "
                "set by --azureml_instance_count and the GPUs per machine by --azureml_processes_per_instance"
            )
    if container.azureml_dataset is not None and not _has(container, "local_dataset"):
        raise UserError(f"--azureml_dataset: {type(container).__name__} has no --local_dataset to point at it")
    if container.azureml_extra_datasets and not _has(container, "extra_local_dataset_paths"):
        raise UserError(
            f"--azureml_extra_datasets: {type(container).__name__} has no --extra_local_dataset_paths to point at"
        )
    check_pretraining(container)
    for tag in container.azureml_tags:
        if "=" not in tag or not tag.partition("=")[0].strip():
            raise UserError(f"--azureml_tags entry '{tag}' is not key=value")


def validate_for_job(container: Any) -> None:
    """The container's own validation, without what only the job's machine has (dataset mounts, GPUs)."""
    container.validate(check_this_machine=False)


# --- the job --------------------------------------------------------------------------------------------------
def data_path(spec: str, flag: str) -> str:
    """A dataset given on the command line as the ``path`` of a job input."""
    text = spec.strip()
    if text.startswith("azureml:") or "://" in text:
        return text
    if _ASSET.match(text):
        return f"azureml:{text}"
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser().resolve())
    raise UserError(
        f"{flag}={spec} is not a data asset (name:version or name@latest), an azureml:// or https:// path, "
        "or a local folder"
    )


def conda_specification(repo_root: Path) -> dict:
    """environment.yml without its editable install of the repository (the job runs from the code snapshot)."""
    path = repo_root / "environment.yml"
    if not path.is_file():
        raise UserError(f"{path} not found: --azureml builds the job's environment from the repository's one")
    spec = yaml.safe_load(path.read_text())
    dependencies = []
    for item in spec.get("dependencies", []):
        if isinstance(item, dict) and "pip" in item:
            item = {**item, "pip": [r for r in item["pip"] if not str(r).strip().startswith("-e")]}
        dependencies.append(item)
    return {**spec, "dependencies": dependencies}


def environment(container: Any, repo_root: Path) -> Any:
    """The registered environment by reference, or an anonymous one from environment.yml on the base image."""
    if container.azureml_environment is not None:
        name = container.azureml_environment.strip()
        if name.startswith("azureml:"):
            return name
        if not _ASSET.match(name):
            raise UserError(
                f"--azureml_environment={name} is not a registered environment: give name:version or name@latest"
            )
        return f"azureml:{name}"
    from azure.ai.ml.entities import Environment

    return Environment(image=container.azureml_docker_image, conda_file=conda_specification(repo_root))


def _config_module_for_job(value: str | None, repo_root: Path) -> str | None:
    """--config_module as the job sees it: files must lie in the repository (the uploaded snapshot)."""
    if value is None or not value.endswith(".py"):
        return value
    path = Path(value).expanduser().resolve()
    try:
        return path.relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        raise UserError(
            f"--config_module={value} lies outside the repository {repo_root}, which is what the Azure ML job "
            "receives: move the file into the repository"
        ) from None


def _flag(name: str, value: str | None) -> str:
    return f"--{name}" if value is None else shlex.quote(f"--{name}={value}")


def job_command(container: Any, model_name: str, flags: Mapping[str, str | None], repo_root: Path) -> str:
    """``python runner.py`` with the user's flags, minus the Azure ML ones, plus the job's inputs and outputs."""
    parts = ["python", "runner.py", _flag("model", model_name)]
    for name, value in flags.items():
        if name in AZUREML_FLAGS or name in JOB_SET_FLAGS:
            continue
        if name == "config_module":
            value = _config_module_for_job(value, repo_root)
        parts.append(_flag(name, value))
    if container.azureml_dataset is not None:
        parts.append(f"--local_dataset=${{{{inputs.{DATASET_INPUT}}}}}")
    if container.azureml_extra_datasets:
        bindings = [
            f"${{{{inputs.{EXTRA_DATASET_INPUT.format(i)}}}}}" for i in range(len(container.azureml_extra_datasets))
        ]
        parts.append("--extra_local_dataset_paths=" + ",".join(bindings))
    if container.pretraining_run_id is not None:
        parts.append(f"--pretraining_outputs_folder=${{{{inputs.{PRETRAINING_INPUT}}}}}")
    # A fixed run name and --auto_resume: a preempted job that Azure ML restarts (or a job resubmitted with the
    # same --run_name onto the same --azureml_output_path) continues from its last.ckpt instead of starting over.
    if "run_name" not in flags:
        parts.append(_flag("run_name", container.run_name or new_run_name()))
    if "auto_resume" not in flags and "resume" not in flags:
        parts.append("--auto_resume")
    parts.append(f"--max_num_gpus={container.azureml_processes_per_instance}")
    parts.append(f"--num_nodes={container.azureml_instance_count}")
    parts.append(f"--output_dir=${{{{outputs.{OUTPUT_NAME}}}}}")
    return " ".join(parts)


def job_output(container: Any, sdk: Any) -> Any:
    """The job's output folder: its own, or the shared datastore folder of ``--azureml_output_path``."""
    path = container.azureml_output_path
    if path is None:
        return sdk.Output(type="uri_folder")
    if not path.startswith("azureml://datastores/"):
        raise UserError(
            f"--azureml_output_path={path} is not a datastore folder: give azureml://datastores/<store>/paths/<folder>"
        )
    return sdk.Output(type="uri_folder", path=path, mode="rw_mount")


def job_tags(container: Any, model_name: str) -> dict[str, str]:
    tags = {"model": model_name}
    if container.pretraining_run_id is not None:
        tags["pretraining_run_id"] = container.pretraining_run_id
    for tag in container.azureml_tags:
        key, _, value = tag.partition("=")
        tags[key.strip()] = value.strip()
    return tags


def build_command_job(
    container: Any, model_name: str, flags: Mapping[str, str | None], repo_root: Path = REPO_ROOT
) -> Command:
    """The azure-ai-ml command job that runs ``python runner.py --model=NAME ...`` on the chosen machines.

    ``flags`` are the user's flags as given (text values; None for a bare boolean), including
    ``config_module`` when used. The container's values decide the inputs, machines and environment.
    """
    sdk = _sdk()
    if not (repo_root / "runner.py").is_file():
        raise UserError(
            f"--azureml uploads the innerssl repository, but {repo_root} has no runner.py: run from a checkout "
            "installed with pip install -e ."
        )
    check_pretraining(container)
    mode = container.azureml_dataset_mode
    inputs: dict[str, Any] = {}
    if container.azureml_dataset is not None:
        inputs[DATASET_INPUT] = sdk.Input(
            type="uri_folder", path=data_path(container.azureml_dataset, "--azureml_dataset"), mode=mode
        )
    for index, spec in enumerate(container.azureml_extra_datasets):
        inputs[EXTRA_DATASET_INPUT.format(index)] = sdk.Input(
            type="uri_folder", path=data_path(spec, "--azureml_extra_datasets"), mode=mode
        )
    if container.pretraining_run_id is not None:
        inputs[PRETRAINING_INPUT] = sdk.Input(
            type="uri_folder",
            path=f"azureml://jobs/{container.pretraining_run_id}/outputs/{OUTPUT_NAME}",
            mode="ro_mount",
        )
    instances = container.azureml_instance_count
    processes = container.azureml_processes_per_instance
    distribution = sdk.PyTorchDistribution(process_count_per_instance=processes) if instances * processes > 1 else None
    display_name = model_name if container.run_name is None else f"{model_name} {container.run_name}"
    return sdk.command(
        code=str(repo_root),
        command=job_command(container, model_name, flags, repo_root),
        inputs=inputs,
        outputs={OUTPUT_NAME: job_output(container, sdk)},
        environment=environment(container, repo_root),
        compute=container.azureml_compute_cluster,
        instance_count=instances,
        distribution=distribution,
        experiment_name=container.azureml_experiment or model_name,
        display_name=display_name,
        tags=job_tags(container, model_name),
        description=f"innerssl {model_name}",
    )


def job_yaml(job: Any) -> str:
    """The job as YAML in the format ``az ml job create --file`` accepts (the SDK's own serialisation)."""
    _sdk()
    standalone = job._to_job() if hasattr(job, "_to_job") else job
    with _azure_errors("validate the job"):
        standalone._validate()
    stream = StringIO()
    standalone.dump(stream)
    return f"$schema: {JOB_SCHEMA}\n" + stream.getvalue()


def write_dry_run(container: Any, model_name: str, job: Any) -> Path:
    text = job_yaml(job)
    path = container.output_root() / model_name / JOB_YAML_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text, end="" if text.endswith("\n") else "\n")
    print(f"Azure ML job specification written to {path} (nothing was submitted).")
    print(f"Submit it with: az ml job create --file {path}  (or run the same command with --azureml)")
    if not container.azureml_compute_cluster:
        print("Note: no --azureml_compute_cluster given; the job needs one to be submitted.")
    return path


# --- workspace and submission ---------------------------------------------------------------------------------
def find_workspace_config(start: Path | None = None) -> Path | None:
    """config.json (or .azureml/config.json) of a workspace, from ``start`` (the working directory) upwards."""
    folder = (start or Path.cwd()).resolve()
    for candidate_folder in (folder, *folder.parents):
        for name in WORKSPACE_CONFIG_NAMES:
            candidate = candidate_folder / name
            if candidate.is_file() and _is_workspace_config(candidate):
                return candidate
    return None


def _is_workspace_config(path: Path) -> bool:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(content, dict) and ("workspace_name" in content or "Scope" in content)


def ml_client() -> MLClient:
    """MLClient for the workspace of config.json (searched from the working directory up) or the env variables."""
    sdk = _sdk()
    config = find_workspace_config()
    values = {name: os.environ.get(name, "").strip() for name in WORKSPACE_ENV_VARS}
    if config is None and not all(values.values()):
        raise UserError(MISSING_WORKSPACE)
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise UserError(MISSING_EXTRA) from None
    credential = DefaultAzureCredential()
    if config is not None:
        logger.info("Azure ML workspace from %s", config)
        return sdk.MLClient.from_config(credential=credential, path=str(config))
    logger.info("Azure ML workspace from the environment variables %s", ", ".join(WORKSPACE_ENV_VARS))
    return sdk.MLClient(
        credential=credential,
        subscription_id=values["AZURE_SUBSCRIPTION_ID"],
        resource_group_name=values["AZURE_RESOURCE_GROUP"],
        workspace_name=values["AZUREML_WORKSPACE_NAME"],
    )


@contextmanager
def _azure_errors(action: str) -> Iterator[None]:
    """Azure's sign-in, not-found and service errors as one-line UserErrors (no tokens are in these messages)."""
    from azure.ai.ml.exceptions import MlException
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    try:
        yield
    except ClientAuthenticationError:
        raise UserError(
            f"Could not sign in to Azure to {action}: run 'az login' (or set the credentials "
            "DefaultAzureCredential reads, e.g. a managed identity), then try again"
        ) from None
    except ResourceNotFoundError as error:
        raise UserError(f"Could not {action}: {_first_line(error)}") from None
    except (HttpResponseError, MlException) as error:
        raise UserError(f"Azure ML could not {action}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def submit(job: Any, client: Any = None) -> str:
    """Create the job in the workspace; prints and returns its name, and prints its studio URL."""
    _sdk()
    client = client if client is not None else ml_client()
    with _azure_errors("submit the job"):
        created = client.jobs.create_or_update(job)
    print(f"Submitted Azure ML job {created.name} (experiment {created.experiment_name})")
    print(f"Follow it in Azure ML studio: {created.studio_url}")
    return created.name


# --- pretraining checkpoints ----------------------------------------------------------------------------------
def find_last_checkpoint(folder: Path, source: str) -> Path:
    """The ``checkpoints/last.ckpt`` under ``folder`` (the newest, if the outputs hold several runs)."""
    found = sorted(Path(folder).rglob(LAST_CHECKPOINT_PATTERN), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"No checkpoints/last.ckpt in the outputs of {source}: give an innerssl SSL run that finished at "
            "least one epoch"
        )
    if len(found) > 1:
        logger.warning("%d checkpoints in the outputs of %s; using the newest, %s", len(found), source, found[-1])
    return found[-1]


def download_pretraining_checkpoint(run_id: str, destination: Path, client: Any = None) -> Path:
    """Download the outputs of Azure ML job ``run_id`` into ``destination``; returns its checkpoints/last.ckpt."""
    destination = Path(destination)
    source = f"Azure ML job {run_id}"
    if any(destination.rglob(LAST_CHECKPOINT_PATTERN)):
        logger.info("Using the checkpoint of %s downloaded before to %s", source, destination)
        return find_last_checkpoint(destination, source)
    _sdk()
    client = client if client is not None else ml_client()
    destination.mkdir(parents=True, exist_ok=True)
    with _azure_errors(f"download the outputs of job {run_id}"):
        client.jobs.download(name=run_id, download_path=str(destination), output_name=OUTPUT_NAME)
    return find_last_checkpoint(destination, source)


def use_pretraining_checkpoint(container: Any, model_name: str) -> None:
    """For a run here (or inside a job): point ``local_weights_path`` at the pretraining run's last.ckpt."""
    check_pretraining(container)
    if container.pretraining_outputs_folder is not None:
        folder = Path(container.pretraining_outputs_folder)
        if not folder.is_dir():
            raise UserError(f"--pretraining_outputs_folder={folder} is not a folder: pass the SSL run's outputs")
        container.local_weights_path = str(find_last_checkpoint(folder, str(folder)))
    elif container.pretraining_run_id is not None:
        destination = container.output_root() / model_name / "pretraining" / container.pretraining_run_id
        container.local_weights_path = str(download_pretraining_checkpoint(container.pretraining_run_id, destination))
    else:
        return
    logger.info("Encoder weights of the pretraining run: %s", container.local_weights_path)
