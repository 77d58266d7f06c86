"""GPUs for local jobs: the pool, leases no two processes share, the job cap, the launch
(torchrun, data parallel: run here on CPU over gloo), and a sweep that never shares a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.base import Hyperparameters, JobStatus, TrainingRequest
from orchestrator.backends.local import LocalBackend, LocalOptions
from orchestrator.backends.local.devices import (
    WORKER_MODULE,
    Gpu,
    Leases,
    Placement,
    placement,
    worker_command,
)
from orchestrator.backends.local.jobfiles import JobFolder, ProcessRecord
from orchestrator.core.errors import ProviderBusyError, UsageError
from orchestrator.testing import poll_until
from tests.backends.conftest import LOCAL_OPTIONS
from tests.backends.sweeps import (
    job_folder,
    study,
    tiny_sweep,
)

TWO_GPUS = (Gpu("0", 80.0), Gpu("1", 40.0))


def _found(gpus: Sequence[Gpu]) -> Callable[[], Sequence[Gpu]]:
    return lambda: gpus


def _never() -> Sequence[Gpu]:
    raise AssertionError("discovery was not needed")


def _options(**raw: Any) -> LocalOptions:
    return LocalOptions.parse(raw)


def test_the_pool_is_what_is_found_or_declared() -> None:
    assert placement(_options(), _found(TWO_GPUS)) == Placement(("0", "1"), 1, 40.0)
    assert placement(_options(devices=[1]), _found(TWO_GPUS)) == Placement(("1",), 1, 40.0)
    assert placement(_options(gpus_per_trial=2), _found(TWO_GPUS)).max_jobs == 1
    declared = _options(devices=[0, 1, 2], gpu_memory_gb=24)
    assert placement(declared, _never) == Placement(("0", "1", "2"), 1, 24.0)
    # on a machine without CUDA: nothing leased, as before GPUs were scheduled
    assert placement(_options(), _found(())) == Placement()
    assert placement(_options(device="cpu", gpu_memory_gb=8), _never) == Placement(memory_gib=8)
    assert placement(_options(device="cuda:1"), _never).max_jobs is None
    short = placement(_options(gpus_per_trial=3), _found(TWO_GPUS))
    assert short.max_jobs is None and short.problem is not None
    assert "gpus_per_trial 3 but this machine has 2 GPU(s) (0, 1)" in short.problem


def test_bad_device_options_are_refused() -> None:
    from orchestrator.core.errors import UnsupportedParameterError

    for bad in (
        {"device": "cpu", "devices": [0]},
        {"device": "cuda:1", "gpus_per_trial": 1},
        {"devices": [0, 0]},
        {"devices": [0], "gpus_per_trial": 2},
        {"devices": [-1]},
        {"gpu_memory_gb": 0},
        {"epoch_handshake_s": -1},
    ):
        with pytest.raises(UnsupportedParameterError):
            LocalOptions.parse(bad)


def test_the_backend_caps_jobs_at_free_gpus_per_trial(tmp_path: Path) -> None:
    def backend(**raw: Any) -> LocalBackend:
        gpus = _found(TWO_GPUS)
        return LocalBackend(tmp_path, _options(**raw), discover=gpus, leases=tmp_path / "l")

    assert backend().capabilities.max_concurrent_jobs == 2
    assert backend(gpus_per_trial=2).capabilities.max_concurrent_jobs == 1
    assert backend(devices=[0, 1, 2, 3], gpus_per_trial=2).capabilities.max_in_flight == 2
    plain = LocalBackend(tmp_path, _options(), discover=_found(()))
    assert plain.capabilities is LocalBackend.capabilities  # no GPU: no cap, as before
    with pytest.raises(UsageError, match="gpus_per_trial 3"):
        backend(gpus_per_trial=3).preflight()


def test_the_launch_command() -> None:
    job = Path("/work/jobs/local-1")
    assert worker_command("/py", job, 0) == ["/py", "-m", WORKER_MODULE, str(job)]
    assert worker_command("/py", job, 1) == ["/py", "-m", WORKER_MODULE, str(job)]
    assert worker_command("/py", job, 4) == [
        "/py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--max-restarts=0",
        "-m",
        WORKER_MODULE,
        str(job),
    ]


RACER = """
import json, sys, time
from pathlib import Path
from orchestrator.backends.local.devices import Leases
root, job, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
got = Leases(root).take(["0", "1"], 1, job)
print(json.dumps(got))
"""


def test_processes_racing_for_gpus_never_lease_one_twice(tmp_path: Path) -> None:
    root, go = tmp_path / "leases", tmp_path / "go"
    jobs = [tmp_path / f"job-{i}" for i in range(6)]
    for job in jobs:
        job.mkdir()  # no pid yet: a job starting, alive within its start grace
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(root), str(job), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for job in jobs
    ]
    time.sleep(1.0)  # every racer is waiting at the line
    go.touch()
    got = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    winners = [g for g in got if g is not None]
    assert sorted(d for g in winners for d in g) == ["0", "1"], got
    holders = Leases(root).holders(["0", "1"])
    assert sorted(holders.values()) == sorted(j for j, g in zip(jobs, got, strict=True) if g)


def test_a_dead_holder_s_lease_is_reclaimed_and_a_live_one_kept(tmp_path: Path) -> None:
    leases = Leases(tmp_path / "leases", start_grace_s=60)
    dead, live, fresh, late = (tmp_path / n for n in ("dead", "live", "fresh", "late"))
    for job in (dead, live, fresh, late):
        job.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    JobFolder(dead).write_pid(ProcessRecord.of(gone.pid))
    JobFolder(dead).write_devices({"devices": ["0"], "lease_root": str(leases.root)})
    JobFolder(live).write_pid(ProcessRecord.of(os.getpid()))
    assert leases.take(["0"], 1, dead) == ("0",)
    assert leases.take(["1"], 1, live) == ("1",)
    assert leases.take(["2"], 1, fresh) == ("2",)  # no worker yet, within the start grace
    assert leases.take(["3"], 1, late, now=time.time() - 120) == ("3",)  # never started
    assert leases.take(["0", "1", "2", "3"], 3, tmp_path) is None  # only 0 and 3 are free
    assert leases.take(["0", "1", "2", "3"], 2, tmp_path) == ("0", "3")
    assert JobFolder(dead).read_devices() is not None
    assert (JobFolder(dead).read_devices() or {})["freed_by"] == "reclaimed"
    leases.release(["1", "2"], tmp_path)  # not its leases: they stay
    assert set(leases.holders(["0", "1", "2", "3"])) == {"0", "1", "2", "3"}


def test_submit_is_busy_while_every_gpu_is_leased(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    options = LocalOptions.parse({**LOCAL_OPTIONS, "devices": [7]})
    leases = local_workdir / "leases"
    backend = LocalBackend(local_workdir, options, leases=leases)
    long = Hyperparameters(2000, 4, 1.0, 0.1)
    first = backend.submit(TrainingRequest("first", "tiny", long, *reverse_small))
    with pytest.raises(ProviderBusyError, match=r"0 of 1 GPUs free, 1 needed \(GPU 7: local-"):
        backend.submit(TrainingRequest("second", "tiny", long, *reverse_small))
    assert [p.name for p in (local_workdir / "jobs").iterdir()] == [first.job_id]
    assert backend.find("second") is None  # the engine submits it again later
    poll_until(backend, first, lambda p: bool(p.points), timeout_s=180)
    backend.cancel(first)
    assert poll_until(backend, first, timeout_s=60).last.status is JobStatus.CANCELLED
    folder = JobFolder(local_workdir / "jobs" / first.job_id)
    assert folder.read_status()["cuda_visible_devices"] == "7"
    assert (folder.read_devices() or {})["devices"] == ["7"]
    deadline = time.monotonic() + 30
    while Leases(leases).holders(["7"]):  # freed by the worker as it exits
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_two_gpus_per_trial_train_data_parallel_with_the_single_process_losses(
    tiny_model: Path, local_workdir: Path, reverse_small: tuple[Path, Path]
) -> None:
    """``torchrun`` with two ranks (gloo on CPU, as NCCL would on two GPUs): batch 23 of 24
    examples leaves one example for the epoch's second step (so a rank holds none), and
    ``max_device_batch: 4`` gives the ranks three and two micro-batches."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        pytest.skip("with CUDA the ranks take a GPU each: two are needed")
    hp = Hyperparameters(2, 23, 1.0, 0.1)
    leases = local_workdir / "leases"
    two = LocalOptions.parse({**LOCAL_OPTIONS, "devices": [0, 1], "gpus_per_trial": 2})
    ddp = LocalBackend(local_workdir, two, leases=leases)
    one = LocalBackend(local_workdir, LocalOptions.parse(LOCAL_OPTIONS), discover=_found(()))
    request = TrainingRequest("ddp", "tiny", hp, *reverse_small, options={"max_device_batch": 4})
    handles = ddp.submit(request), one.submit(TrainingRequest("one", "tiny", hp, *reverse_small))
    ddp_polled = poll_until(ddp, handles[0], timeout_s=300)
    one_polled = poll_until(one, handles[1], timeout_s=300)
    assert ddp_polled.last.status is JobStatus.SUCCEEDED, ddp_polled.last.error
    assert one_polled.last.status is JobStatus.SUCCEEDED, one_polled.last.error
    for name in ("train_loss", "train_mean_token_accuracy", "full_valid_loss"):
        ours, theirs = ddp_polled.series(name), one_polled.series(name)
        assert [s for s, _ in ours] == [s for s, _ in theirs] and len(ours) >= 2
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], abs=1e-5)
    folder = JobFolder(local_workdir / "jobs" / handles[0].job_id)
    status = folder.read_status()
    assert status["cuda_visible_devices"] == "0,1" and status["processes"] == 2
    single = JobFolder(local_workdir / "jobs" / handles[1].job_id).read_status()
    assert single["processes"] == 1
    assert single["cuda_visible_devices"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert (folder.model_dir / "config.json").is_file()


def test_a_sweep_on_two_declared_gpus_never_shares_one(
    cli: Callable[..., Any], tiny_model: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """``sweeps/tiny.yaml`` with ``devices: [0, 1]`` and ``parallel: 4`` on this CPU: the
    jobs' leases and recorded ``CUDA_VISIBLE_DEVICES`` show one GPU each, never the same
    one at once, and at most two jobs at a time."""
    spec = tiny_sweep(
        tmp_path,
        {"devices": [0, 1]},
        parallel=4,
        sampler={"name": "random", "seed": 1},
    )
    result = cli("run", spec)
    assert result.code == 0, result.err
    assert "local runs at most 2 job(s) at once" in result.out + result.err
    held: list[tuple[float, float, str]] = []
    for trial in study(runs_dir).trials:
        folder = job_folder(runs_dir, trial)
        devices = folder.read_devices() or {}
        assert devices["freed_by"] == "worker", devices
        assert len(devices["devices"]) == 1
        assert folder.read_status()["cuda_visible_devices"] == devices["devices"][0]
        held.append((devices["leased"], devices["released"], devices["devices"][0]))
    assert len(held) == 6
    for i, (start, end, gpu) in enumerate(held):
        overlapping = [g for j, (s, e, g) in enumerate(held) if j != i and s < end and start < e]
        assert gpu not in overlapping, held
    # how many held a GPU at each moment one was leased: never more than two, and two did
    together = [sum(s <= t < e for s, e, _ in held) for t, _, _ in held]
    assert max(together) == 2, held
    estimate = cli("estimate", spec)  # the sweep's wall time, two trials at a time
    assert estimate.code == 0, estimate.err
    assert "(2 at a time, before pruning)" in estimate.out, estimate.out
    # from the tokens per second its 6 trials measured, shown in the report too (no MFU: CPU)
    assert re.search(r"time per trial .*\(measured: [\d,.k]+ tok/s from 6 trials", estimate.out)
    measured = json.loads(cli("estimate", spec, "--json").out)["measured_throughput"]
    rows = json.loads(cli("report", spec, "--format", "json").out)
    rates = sorted(row["tokens_per_second"] for row in rows)
    assert len(rates) == 6 and rates[0] > 0 and measured["trials"] == 6
    assert measured["tokens_per_second"] == (rates[2] + rates[3]) / 2  # their median
    assert all(row["peak_memory_mb"] > 0 and "mfu" not in row for row in rows)
    table = cli("report", spec).out
    assert "tok/s" in table.splitlines()[0] and "MFU" not in table
