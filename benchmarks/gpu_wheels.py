"""Download, here, the wheels a bare GPU machine needs to run innerssl (and benchmarks/gpu_check.py) offline.

The GPU machines' image has torch, torchvision, pytorch-lightning, timm, torchmetrics, pandas and tifffile (and
what they depend on) but nothing else, and no internet. This script works out innerssl's other dependencies:
the dependency closure of pyproject.toml's required packages minus the closure of the image's packages, followed
through the metadata of this environment (where ``pip install -e .`` installed them), each pinned to the version
installed (and tested) here. It downloads them with ``pip download`` for the GPU machine's platform (Linux x86_64, this
Python's minor version unless ``--python_version`` says otherwise) into ``wheels/`` (ignored by git), builds
wheels here for the pure-Python packages that publish only a source archive, adds setuptools (which an
offline ``pip install -e .`` needs to build innerssl's editable wheel), and writes ``wheels/requirements.txt``.

    python benchmarks/gpu_wheels.py                      # here, with the package index reachable
    # on the GPU machine, from the repository root (offline):
    pip install --no-index --find-links wheels/ -r wheels/requirements.txt \
        && pip install --no-index --find-links wheels/ --no-deps -e . && python benchmarks/gpu_check.py

Optional extras (``[test]``, ``[azure]``, ``[export]``: pytest, Azure ML, ONNX) are left out: the GPU check needs
none of them. The folder holds about 50 MB; ``--max_mb`` (default 60) makes the script fail when it grows
beyond what travels with a checkout.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_PACKAGES = ("torch", "torchvision", "pytorch-lightning", "timm", "torchmetrics", "pandas", "tifffile")
"""What the GPU machines' image has installed; their own dependencies come with them."""
BUILD_PACKAGES = ("setuptools",)
"""Build backend of innerssl's pyproject.toml: ``pip install -e .`` installs it into its isolated build
environment, from wheels/ when the index is unreachable."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
"""Wheel platform tags a Linux x86_64 machine with glibc >= 2.28 (every current CUDA image) installs."""
DEFAULT_MAX_MB = 60.0
REQUIREMENTS_FILE = "requirements.txt"
MB = 1_000_000


def marker_environment(python_version: str) -> dict[str, str]:
    """The environment markers of the GPU machine (Linux x86_64 CPython ``python_version``)."""
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }


def requirements_of(name: str, extras: set[str], environment: dict[str, str]) -> list[Requirement]:
    """The installed distribution ``name``'s requirements that apply on the target (with ``extras``)."""
    applying = []
    for text in metadata.distribution(name).requires or []:
        requirement = Requirement(text)
        wanted = requirement.marker is None or any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
        )
        if wanted:
            applying.append(requirement)
    return applying


def project_requirements(environment: dict[str, str]) -> list[Requirement]:
    """innerssl's required dependencies as pyproject.toml lists them now (not as an older install recorded them)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({**environment, "extra": ""})]


def dependency_closure(
    roots: list[Requirement], environment: dict[str, str]
) -> tuple[dict[str, set[str]], dict[str, list[str]], list[str]]:
    """Every distribution ``roots`` need (by canonical name, with the extras asked of it), what its requirers ask
    of its version (specifiers), and the names that are not installed here (their dependencies cannot be
    followed)."""
    needed: dict[str, set[str]] = {}
    missing: list[str] = []
    specifiers: dict[str, list[str]] = {}
    for root in roots:
        specifiers.setdefault(canonicalize_name(root.name), []).extend(str(s) for s in root.specifier)
    pending: list[tuple[str, set[str]]] = [(canonicalize_name(root.name), set(root.extras)) for root in roots]
    while pending:
        name, extras = pending.pop()
        if name in needed and extras <= needed[name]:
            continue
        needed.setdefault(name, set()).update(extras)
        try:
            requirements = requirements_of(name, needed[name], environment)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        for requirement in requirements:
            dependency = canonicalize_name(requirement.name)
            specifiers.setdefault(dependency, []).extend(str(s) for s in requirement.specifier)
            pending.append((dependency, set(requirement.extras)))
    return needed, specifiers, sorted(set(missing))


def needed_packages(python_version: str) -> tuple[dict[str, str], list[str]]:
    """Every package innerssl needs beyond the image, with the specifiers its requirers ask for (joined), and the
    image packages not installed here (their closure is unknown, so nothing is excluded on their behalf)."""
    environment = marker_environment(python_version)
    project, specifiers, missing_project = dependency_closure(project_requirements(environment), environment)
    if missing_project:
        raise SystemExit(
            f"not installed here, so their versions are unknown: {', '.join(missing_project)} (pip install -e .)"
        )
    image, _, missing_image = dependency_closure([Requirement(name) for name in IMAGE_PACKAGES], environment)
    names = sorted(set(project) - set(image))
    return {name: ",".join(sorted(set(specifiers.get(name, [])))) for name in names}, missing_image


def pip(*arguments: str, check: bool = True) -> bool:
    command = [sys.executable, "-m", "pip", *arguments]
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, check=check).returncode == 0


def target_options(python_version: str) -> list[str]:
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    return ["--python-version", python_version, "--implementation", "cp", *platforms]


def downloaded(destination: Path) -> dict[str, str]:
    """Canonical name -> version of the wheels in ``destination``."""
    return {
        str(name): str(version)
        for name, version, _, _ in (parse_wheel_filename(wheel.name) for wheel in destination.glob("*.whl"))
    }


def pure_python_wheel_from_source(requirement: str, destination: Path, target: list[str]) -> bool:
    """A package that publishes only a source archive: built into a wheel here, kept if it is pure Python (a
    platform wheel built here would carry this machine's glibc tag, which the GPU machine may not accept)."""
    with tempfile.TemporaryDirectory() as scratch:
        if not pip("download", "--no-deps", "--no-binary=:all:", "--dest", scratch, *target, requirement, check=False):
            return False
        archives = [path for path in Path(scratch).iterdir() if path.is_file()]
        if not archives or not pip("wheel", "--no-deps", "--wheel-dir", scratch, str(archives[0]), check=False):
            return False
        wheels = list(Path(scratch).glob("*.whl"))
        if len(wheels) != 1 or not wheels[0].name.endswith("-none-any.whl"):
            return False
        shutil.move(str(wheels[0]), destination / wheels[0].name)
        return True


def download(packages: dict[str, str], destination: Path, python_version: str) -> None:
    """A wheel of every package for the target platform: the version installed here, else the newest version with
    a wheel for the target that its requirers accept (a binary package whose release installed here has no wheel
    for that Python), else a pure-Python wheel built here from its source archive (packages that publish none)."""
    target = target_options(python_version)
    pinned = [f"{name}=={metadata.version(name)}" for name in packages]
    if pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(destination), *target, *pinned, check=False):
        return
    for name, specifier in packages.items():
        if name in downloaded(destination):
            continue
        exact = f"{name}=={metadata.version(name)}"
        binary = ["download", "--no-deps", "--only-binary=:all:", "--dest", str(destination), *target]
        if pip(*binary, exact, check=False):
            continue
        if pip(*binary, f"{name}{specifier}", check=False):
            print(f"note: {exact} has no wheel for the target; took {name}=={downloaded(destination)[name]}")
            continue
        if not pure_python_wheel_from_source(exact, destination, target):
            raise SystemExit(f"no wheel of {name}{specifier} for Linux x86_64 CPython {python_version}")


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file()) / MB


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(REPO_ROOT / "wheels"), help="wheel folder (replaced)")
    parser.add_argument(
        "--python_version",
        default=f"{sys.version_info.major}.{sys.version_info.minor}",
        help="the GPU machine's Python minor version, e.g. 3.11 (default: this Python's)",
    )
    parser.add_argument("--max_mb", type=float, default=DEFAULT_MAX_MB, help="fail when the folder is larger")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    packages, unknown_image_packages = needed_packages(args.python_version)
    if unknown_image_packages:
        print(
            f"not installed here, assumed to bring only what the image has: {', '.join(unknown_image_packages)}",
            flush=True,
        )
    destination = Path(args.dest)
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    download({**packages, **{name: "" for name in BUILD_PACKAGES}}, destination, args.python_version)
    versions = downloaded(destination)
    # Only the runtime packages: the build backend is found by pip's isolated build through --find-links.
    runtime = [f"{name}=={versions[name]}" for name in packages]
    (destination / REQUIREMENTS_FILE).write_text("\n".join(runtime) + "\n")
    size = folder_size_mb(destination)
    print(
        f"{len(runtime)} packages (+ {', '.join(BUILD_PACKAGES)}) for Linux x86_64 CPython {args.python_version}, "
        f"{size:.1f} MB in {destination}"
    )
    if size > args.max_mb:
        raise SystemExit(f"{destination} holds {size:.1f} MB, more than --max_mb={args.max_mb:g}")


if __name__ == "__main__":
    main()
