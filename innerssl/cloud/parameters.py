"""The cloud group: the Azure ML flags of every shipped container (a base of each), to submit a run instead.

Declarations only; what they do lives in ``innerssl.cloud.azureml``, which imports the Azure SDK lazily.
"""

from __future__ import annotations

from typing import ClassVar

import param

DEFAULT_DOCKER_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
DATASET_MODES = ["ro_mount", "download"]


class AzureMLParameters(param.Parameterized):
    """Where and how ``--azureml`` runs the same runner command as an Azure ML (SDK v2) command job."""

    group_title: ClassVar[str] = "Azure ML"
    group_order: ClassVar[int] = 100

    azureml: bool = param.Boolean(
        False,
        doc="Submit this run as an Azure ML command job instead of running it here (needs the azure extra "
        "and a workspace: config.json or AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME).",
    )
    azureml_dry_run: bool = param.Boolean(
        False,
        doc="Write the Azure ML job specification to <output_dir>/<model>/azureml_job.yaml (the format of "
        "'az ml job create --file') and print it, without contacting Azure or training.",
    )
    azureml_compute_cluster: str | None = param.String(
        None, allow_None=True, doc="Name of the Azure ML compute cluster the job runs on (required to submit)."
    )
    azureml_instance_count: int = param.Integer(
        1, bounds=(1, None), doc="Number of machines (nodes) of the job; sets --num_nodes inside the job."
    )
    azureml_processes_per_instance: int = param.Integer(
        1,
        bounds=(1, None),
        doc="Processes (one per GPU) on each machine; sets --max_num_gpus inside the job. More than one process "
        "in all runs a PyTorch distribution (DDP).",
    )
    azureml_environment: str | None = param.String(
        None,
        allow_None=True,
        doc="Registered Azure ML environment, name:version or name@latest. None: build one from the "
        "repository's environment.yml on --azureml_docker_image.",
    )
    azureml_docker_image: str = param.String(
        DEFAULT_DOCKER_IMAGE,
        doc="Base image on which environment.yml is installed when --azureml_environment is not given.",
    )
    azureml_experiment: str | None = param.String(
        None, allow_None=True, doc="Azure ML experiment the job is filed under; default: the model name."
    )
    azureml_dataset: str | None = param.String(
        None,
        allow_None=True,
        doc="Data of --local_dataset inside the job: a data asset (name:version or name@latest), an "
        "azureml://datastores/... or https:// path, or a local folder (uploaded). It is mounted or downloaded "
        "and the job's --local_dataset points there.",
    )
    azureml_extra_datasets: list[str] = param.List(
        [],
        item_type=str,
        doc="Data of --extra_local_dataset_paths inside the job, in the same order (same forms as --azureml_dataset).",
    )
    azureml_dataset_mode: str = param.Selector(
        objects=DATASET_MODES,
        default="ro_mount",
        doc="How the job sees its datasets: ro_mount (read-only mount, streamed) or download (copied to "
        "local disk first; faster reads of many small files).",
    )
    azureml_output_path: str | None = param.String(
        None,
        allow_None=True,
        doc="A datastore folder (azureml://datastores/<store>/paths/<folder>) that the job's --output_dir is "
        "mounted from, instead of the job's own output folder: jobs that share it see each other's runs, so a job "
        "resubmitted with the same --run_name continues that run from its last.ckpt.",
    )
    azureml_tags: list[str] = param.List(
        [], item_type=str, doc="Tags of the job as key=value, comma-separated (e.g. team=cxr,purpose=baseline)."
    )
    pretraining_run_id: str | None = param.String(
        None,
        allow_None=True,
        doc="Classifiers: name of the Azure ML job of an innerssl SSL run; its checkpoints/last.ckpt is used as "
        "--local_weights_path (downloaded for a run here, mounted for an --azureml job).",
    )
    pretraining_outputs_folder: str | None = param.String(
        None,
        allow_None=True,
        doc="Classifiers: a folder holding an SSL run's outputs; its checkpoints/last.ckpt is used as "
        "--local_weights_path. Set inside --azureml jobs to the mounted outputs of --pretraining_run_id.",
    )
