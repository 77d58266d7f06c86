"""The local backend's ``ray`` executor end to end: a real Ray head on loopback (2 CPUs, one
per test module), ``sweeps/tiny.yaml`` run through the CLI with ``executor: ray``, killed with
SIGKILL mid-sweep and run again; and the pre-flight's refusals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest
import yaml
from mlflow import MlflowClient
from pydantic import ValidationError

from orchestrator.backends.base import JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend
from orchestrator.backends.local.jobfiles import JobFolder, MetricsWriter
from orchestrator.backends.local.options import LocalBackendOptions, LocalOptions
from orchestrator.backends.local.ray_executor import RayExecutor, parse_events, submission_id
from orchestrator.backends.local.ray_worker import Relay, upload_model
from orchestrator.backends.local.tasks import write_task
from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import (
    ProviderUnreachableError,
    UnsupportedParameterError,
    UsageError,
)
from tests.reliability.stores import check, seed_mlflow

pytest.importorskip(
    "ray.job_submission", reason="needs Ray: pip install -e '.[ray]' (make test installs it)"
)

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> Any:
    with urlopen(url, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def _jobs(address: str) -> list[dict[str, Any]]:
    """Every job the Ray cluster knows."""
    jobs = _get(f"{address}/api/jobs/")
    return list(jobs.values()) if isinstance(jobs, dict) else list(jobs)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head on loopback (2 CPUs, no GPU, its dashboard for the Jobs API): its address.
    Jobs still running at the end are stopped; the head's process group is ended."""
    temp = Path(tempfile.mkdtemp(prefix="ftr-", dir="/tmp"))  # Ray's socket paths are short
    dashboard = _free_port()
    ports = {
        "--port": _free_port(),
        "--dashboard-port": dashboard,
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--node-manager-port": _free_port(),
        "--object-manager-port": _free_port(),
    }
    command = [str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0"]
    command += ["--node-ip-address", "127.0.0.1", "--include-dashboard", "true"]
    command += ["--dashboard-host", "127.0.0.1", "--temp-dir", str(temp)]
    command += ["--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # the jobs' ``python`` is this interpreter (the one with torch and transformers)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = (temp / "head.log").open("wb")
    head = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (temp / "head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not answer in 120 s"
            try:
                nodes = _get(f"{address}/api/v0/nodes?detail=1")["data"]["result"]["result"]
                _jobs(address)
                if any(n["state"] == "ALIVE" for n in nodes):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield address
    finally:
        _stop_jobs(address)
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=15)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_jobs(address: str) -> None:
    try:
        for job in _jobs(address):
            if job["status"] in ("PENDING", "RUNNING"):
                stop = Request(f"{address}/api/jobs/{job['submission_id']}/stop", method="POST")
                with urlopen(stop, timeout=5):
                    pass
        time.sleep(1)
    except OSError:
        pass


def _kill_workers(models: Path) -> None:
    """Trainers a test left behind (their Ray jobs are gone with the head)."""
    for pid_file in models.glob("*/pid"):
        record = JobFolder(pid_file.parent).read_pid()
        if record is not None and record.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)


def _spec(tmp_path: Path, options: dict[str, Any], **more: Any) -> Path:
    """``sweeps/tiny.yaml`` with its data in ``tmp_path`` and ``options`` added."""
    train, valid = write_task("reverse", tmp_path / "data", n_train=24, n_valid=8)
    spec = yaml.safe_load((ROOT / "sweeps" / "tiny.yaml").read_text())
    spec["data"] = {"train": str(train), "valid": str(valid)}
    spec.pop("evaluate")  # scores are not what these tests look at
    spec["backend"]["options"].update(options)
    spec.update(more)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _env(runs: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(ROOT), FTSWEEP_RUNS_DIR=str(runs), **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FTSWEEP_OPTUNA_STORAGE", None)
    return env


def _run(spec: Path) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "run", str(spec)]


def _curve(address: str, job: str, name: str) -> list[tuple[int, float]]:
    """The points of metric ``name`` in a Ray job's logs."""
    logs = _get(f"{address}/api/jobs/{job}/logs")["logs"]
    events, _ = parse_events(logs)
    return [
        (int(e["metric"]["step"]), e["metric"][name])
        for e in events
        if "metric" in e
        if name in e["metric"]
    ]


def test_tiny_sweep_as_ray_jobs_survives_kill_9(tmp_path: Path, ray_head: str) -> None:
    runs, models = tmp_path / "runs", tmp_path / "models"
    seed_mlflow(runs)
    good = {
        "n_epochs": 2,
        "batch_size": 8,
        "learning_rate_multiplier": 3.0,
        "prompt_loss_weight": 0.1,
    }
    bad = {
        "n_epochs": 6,
        "batch_size": 16,
        "learning_rate_multiplier": 0.3,
        "prompt_loss_weight": 0.1,
    }
    options = {"executor": "ray", "ray_address": ray_head, "model_dir": str(models)}
    spec = _spec(tmp_path, options, trials=3, enqueue=[good, good | {"batch_size": 4}, bad])
    env = _env(runs)
    try:
        first = subprocess.Popen(
            _run(spec), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:  # kill -9 once both first trials run as Ray jobs
            deadline = time.monotonic() + 180
            while sum(j["status"] == "RUNNING" for j in _jobs(ray_head)) < 2:
                assert first.poll() is None, first.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "no two Ray jobs ran"
                time.sleep(0.2)
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(timeout=60)
        assert first.returncode == -signal.SIGKILL
        running = {j["submission_id"] for j in _jobs(ray_head) if j["status"] == "RUNNING"}

        again = subprocess.run(
            _run(spec), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
        )
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        _kill_workers(models)

    # Ray: one job per trial, with the key-derived id; the running ones were re-attached
    study, found = check(runs, "tiny")
    assert found.problems() == []
    jobs = {j["submission_id"]: j for j in _jobs(ray_head)}
    # (trials derived from a finished job's epochs have no job of their own)
    trials = {t.number: t for t in study.trials if TrialAttrs.JOB_ID in t.user_attrs}
    assert len(trials) == 3 and len(jobs) == 3
    for t in trials.values():
        key = TrainingRequest.from_json(t.user_attrs[TrialAttrs.REQUEST]).key
        job = t.user_attrs[TrialAttrs.JOB_ID]
        assert job == submission_id(key) and jobs[job]["metadata"]["ftsweep_key"] == key
    assert running <= set(jobs)
    assert all(f"re-attached to job {job}" in again.stderr for job in running)
    # a pruned trial's Ray job was stopped; the others succeeded
    states = {t.user_attrs[TrialAttrs.JOB_ID]: t.state.name for t in trials.values()}
    assert "PRUNED" in states.values(), states
    for job, state in states.items():
        assert jobs[job]["status"] == {"PRUNED": "STOPPED", "COMPLETE": "SUCCEEDED"}[state]
    # the curves in MLflow are the jobs' logged metrics, each step once
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    for run in client.search_runs([experiment.experiment_id], max_results=100):
        if "ftsweep.trial" not in run.data.tags:
            continue
        job = trials[int(run.data.tags["ftsweep.trial"])].user_attrs[TrialAttrs.JOB_ID]
        for name in ("train_loss", "valid_loss", "full_valid_loss", "epoch"):
            logged = sorted(
                (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)
            )
            assert logged == _curve(ray_head, job, name), (job, name)
            assert logged or name != "train_loss", job
    # the models are in the shared folder
    for job, state in states.items():
        if state == "COMPLETE":
            assert (models / job / "model").is_dir()


def test_an_unreachable_ray_address_exits_1_in_seconds(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"executor": "ray", "model_dir": str(tmp_path / "models")})
    address = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        _run(spec),
        cwd=ROOT,
        env=_env(tmp_path / "runs", RAY_ADDRESS=address),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert address in line and "does not answer" in line
    assert time.monotonic() - started < 60  # the CLI's start-up included


def test_a_silent_ray_address_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = LocalOptions.parse(
            {"executor": "ray", "ray_address": address, "model_dir": str(tmp_path)}
        )
        started = time.monotonic()
        with pytest.raises(ProviderUnreachableError, match="does not answer"):
            RayExecutor(options, tmp_path).preflight()
        assert time.monotonic() - started < 10


def test_a_gpu_per_trial_on_a_cluster_without_gpus_exits_2(tmp_path: Path, ray_head: str) -> None:
    options = {"executor": "ray", "gpus_per_trial": 1, "model_dir": str(tmp_path / "models")}
    spec = _spec(tmp_path, options)
    done = subprocess.run(
        _run(spec),
        cwd=ROOT,
        env=_env(tmp_path / "runs", RAY_ADDRESS=ray_head),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "1 GPU" in line and "no node" in line
    assert not (tmp_path / "runs" / "optuna.db").exists()  # nothing was started


def test_an_unwritable_model_dir_is_refused_before_any_job(tmp_path: Path, ray_head: str) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    options = LocalOptions.parse(
        {"executor": "ray", "ray_address": ray_head, "model_dir": str(blocked / "models")}
    )
    with pytest.raises(UsageError, match=r"model_dir: cannot write to .*file/models"):
        RayExecutor(options, tmp_path).preflight()


def test_executor_options_are_checked_at_the_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValidationError, match="executor ray needs model_dir"):
        LocalBackendOptions.model_validate({"executor": "ray"})
    with pytest.raises(UnsupportedParameterError, match="'ray_num_cpus' must be a number > 0"):
        LocalOptions.parse({"ray_num_cpus": 0})
    with pytest.raises(UsageError, match=r"unknown executor 'slurm'; known: here, ray"):
        LocalBackend(tmp_path, LocalBackendOptions.model_validate({"executor": "slurm"}))
    no_address = LocalBackendOptions.model_validate({"executor": "ray", "model_dir": "/m"})
    with pytest.raises(UsageError, match=r"set RAY_ADDRESS or backend\.options\.ray_address"):
        LocalBackend(tmp_path, no_address)
    assert submission_id("study/t0") == submission_id("study/t0") != submission_id("study/t1")
    assert submission_id("study/t0").startswith("ftsweep-")


def test_the_relay_prints_an_epoch_end_after_its_line_and_the_final_status_last(
    tmp_path: Path,
) -> None:
    folder = JobFolder(tmp_path / "job")
    folder.path.mkdir()
    out = io.StringIO()
    relay = Relay(folder, out)
    writer = MetricsWriter(folder.metrics_file)
    writer.emit(1, {"train_loss": 2.0, "epoch": 0.5})
    folder.write_epoch_end(1, writer.offset + 10)  # its line is not written yet
    folder.write_status(JobStatus.RUNNING, total_steps=2)
    relay.pump()
    writer.emit(2, {"train_loss": 1.5, "epoch": 1.0})
    folder.write_status(JobStatus.SUCCEEDED, fine_tuned_model="m")
    relay.pump()  # a terminal status waits for the final pump
    writer.close()
    relay.pump(final=True)
    events, end = parse_events(out.getvalue())
    assert end == len(out.getvalue())
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["metric", "status", "metric", "epoch_end", "status"]
    assert events[3] == {"epoch_end": 1} and events[4]["status"]["status"] == "succeeded"


def test_a_model_goes_to_an_fsspec_url(tmp_path: Path) -> None:
    import fsspec

    folder = JobFolder(tmp_path / "job")
    (folder.model_dir / "sub").mkdir(parents=True)
    (folder.model_dir / "sub" / "weights.bin").write_bytes(b"w")
    target = upload_model(folder, "memory://models/", "ftsweep-1")
    assert target == "memory://models/ftsweep-1"
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/models/ftsweep-1/model/sub/weights.bin") == b"w"
