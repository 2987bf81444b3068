"""The retraining Job and CronJob (deployment/jobs/retrain): the trainer's command line is
one the trainer accepts, it reads the data volume and writes the workers' model repository,
and (with TensorFlow installed) that very command line trains a version."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from ml_training.cli import build_parser, options_from_args
from ml_training.options import Options
from server_app.config import parse_config
from tests.deployment.manifests import (
    BASE,
    DATA_LOADER,
    REPO_ROOT,
    RETRAIN,
    Manifest,
    built_manifests,
    containers,
    extract_file,
    find_manifest,
    load_manifests,
    mount_path_of,
    pod_spec,
    volume,
)

MODEL = "lstm"
TRAINING_IMAGE = "mqtt-inference-training"


def job() -> Manifest:
    return find_manifest(built_manifests(RETRAIN), "Job", f"retrain-{MODEL}")


def cronjob() -> Manifest:
    return find_manifest(built_manifests(RETRAIN), "CronJob", f"retrain-{MODEL}-scheduled")


def trainer(workload: Manifest) -> dict[str, Any]:
    (container,) = [c for c in containers(workload, init=False) if c["name"] == "train"]
    return container


def trainer_options(workload: Manifest) -> Options:
    """The trainer container's args, parsed by the trainer's own argument parser."""
    options = options_from_args(build_parser().parse_args(trainer(workload)["args"]))
    options.check()
    return options


def claim(workload: Manifest, volume_name: str) -> str:
    return str(volume(workload, volume_name)["persistentVolumeClaim"]["claimName"])


def test_job_and_cronjob_run_the_same_pod() -> None:
    assert job()["spec"]["template"] == cronjob()["spec"]["jobTemplate"]["spec"]["template"]
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job()["spec"][key] == cronjob()["spec"]["jobTemplate"]["spec"][key], key


def test_the_schedule_is_an_example_and_never_runs_two_trainers() -> None:
    spec = cronjob()["spec"]
    assert spec["suspend"] is True, "unattended retraining into `latest` would go live unreviewed"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_the_trainer_command_line_is_accepted_by_the_trainer(kind: str) -> None:
    workload = job() if kind == "Job" else cronjob()
    container = trainer(workload)
    assert "command" not in container, "the training image's ENTRYPOINT runs the trainer"
    assert container["image"].split(":")[0] == TRAINING_IMAGE
    options = trainer_options(workload)
    assert options.model_name == MODEL and options.model in ("lstm", "ann")
    assert options.last is not None and options.since is None, "recent readings, relative to the data"


def test_the_training_image_runs_the_trainer_as_the_pods_user() -> None:
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile.training").read_text(encoding="utf-8")
    assert re.search(r'^ENTRYPOINT \["python", "-m", "ml_training"\]$', dockerfile, re.M)
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user is not None
    context = pod_spec(job())["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user.groups()
    assert context["fsGroup"] == context["runAsGroup"], "fsGroup makes the volumes writable for the trainer"


def test_it_writes_the_workers_model_repository_and_reads_the_data_volume() -> None:
    workload = job()
    options = trainer_options(workload)
    # --repository is where the models volume is mounted, read-write ...
    assert str(options.repository) == mount_path_of(workload, "train", "models")
    (models_mount,) = [m for m in trainer(workload)["volumeMounts"] if m["name"] == "models"]
    assert not models_mount.get("readOnly", False)
    # ... and that volume is the workers' PVC, whose folder for this model the server serves.
    workers = find_manifest(built_manifests(BASE), "StatefulSet", "inference")
    assert claim(workload, "models") == claim(workers, "models")
    served_root = PurePosixPath(mount_path_of(workers, "inference", "models"))
    config = parse_config(extract_file(built_manifests(BASE), "ConfigMap", "inference-config", "server.yaml"))
    repository = PurePosixPath(str(config.models[options.model_name].repository))
    assert repository == served_root / options.model_name
    # --data is the training-data volume (a folder: every *.csv there), mounted read-only.
    (data,) = options.data
    assert str(data) == mount_path_of(workload, "train", "data")
    assert claim(workload, "data") == "training-data"
    find_manifest(built_manifests(RETRAIN), "PersistentVolumeClaim", "training-data")
    (data_mount,) = [m for m in trainer(workload)["volumeMounts"] if m["name"] == "data"]
    assert data_mount["readOnly"] is True


def test_the_seed_copies_the_sample_data_the_serving_image_ships() -> None:
    workload = job()
    (seed,) = pod_spec(workload)["initContainers"]
    assert seed["image"].split(":")[0] == "mqtt-inference"
    script = seed["command"][-1]
    target = mount_path_of(workload, "seed-data", "data")
    sample = re.search(r"cp (\S+) (\S+)$", script)
    assert sample is not None and sample.group(2).rstrip("/") == target
    assert script.startswith(f"ls {target}/*.csv "), "seeds only a volume without any CSV file"
    source = PurePosixPath(sample.group(1))
    serving = (REPO_ROOT / "docker" / "Dockerfile.serving").read_text(encoding="utf-8")
    assert re.search(rf"^COPY data/ {re.escape(str(source.parent))}/?$", serving, re.M)
    assert (REPO_ROOT / "data" / source.name).is_file()


def test_the_data_loader_mounts_the_same_volume_read_write() -> None:
    (loader,) = load_manifests(DATA_LOADER)
    assert claim(loader, "data") == claim(job(), "data")
    assert mount_path_of(loader, "loader", "data") == mount_path_of(job(), "train", "data")
    (mount,) = [m for m in loader["spec"]["containers"][0]["volumeMounts"] if m["name"] == "data"]
    assert not mount.get("readOnly", False)


def test_the_documented_switch_to_since_yields_a_valid_command_line() -> None:
    """README.md beside the manifests swaps `--last=7d` for `--since=<time>` with sed."""
    readme = (RETRAIN / "README.md").read_text(encoding="utf-8")
    swap = re.search(r"sed 's/(--last=\w+)/(--since=[^/]+)/'", readme)
    assert swap is not None
    args = trainer(job())["args"]
    assert args.count(swap.group(1)) == 1
    swapped = [swap.group(2) if a == swap.group(1) else a for a in args]
    options = options_from_args(build_parser().parse_args(swapped))
    options.check()
    assert options.since is not None and options.last is None


def test_the_documented_pin_shadow_and_promote_configs_are_valid_server_configs() -> None:
    """The loop in README.md beside the manifests: pin the live version, add the new one as
    a tenant's shadow, promote it. Each step is a server config the workers accept."""
    text = extract_file(built_manifests(BASE), "ConfigMap", "inference-config", "server.yaml")
    raw = yaml.safe_load(text)
    readme = (RETRAIN / "README.md").read_text(encoding="utf-8")
    steps = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    assert len(steps) == 3, "pin, shadow, promote"
    pin, shadow, promote = steps
    assert pin["models"][MODEL]["version"] == 1
    (tenant,) = shadow["tenants"]
    assert shadow["tenants"][tenant]["shadow"] == {MODEL: 2}
    assert promote["models"][MODEL]["version"] == 2 and "shadow" not in promote["tenants"][tenant]
    for step in steps:
        for section, entries in step.items():
            raw[section].update(entries)
        config = parse_config(yaml.safe_dump(raw), "server.yaml")
        assert str(config.models[MODEL].repository) == str(raw["models"][MODEL]["repository"])
    assert config.tenants[tenant].shadow == {}


def test_the_jobs_command_line_trains_a_version(tmp_path: Path) -> None:
    """The Job's exact args, with its two volumes pointed at temporary folders (and one
    epoch), publish a version whose metadata records the --last range."""
    pytest.importorskip("tensorflow")
    from ml_training.cli import main
    from ml_training.synth import SynthOptions, generate, write_csv

    workload = job()
    data_dir, models_dir = tmp_path / "data", tmp_path / "models"
    write_csv(generate(SynthOptions(stations=1, days=9, seed=5)), data_dir / "readings.csv")
    mounts = {
        mount_path_of(workload, "train", "data"): str(data_dir),
        mount_path_of(workload, "train", "models"): str(models_dir),
    }
    args = [mounts.get(a, a) for a in trainer(workload)["args"]]
    assert str(data_dir) in args and str(models_dir) in args
    assert main([*args, "--epochs", "1", "--patience", "0", "--quiet"]) == 0
    (version,) = (models_dir / MODEL).iterdir()
    assert version.name == "1"
    metadata = json.loads((version / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["data"]["time_range"]["last"] == "7d"
    assert [Path(f["path"]).name for f in metadata["data"]["files"]] == ["readings.csv"]
