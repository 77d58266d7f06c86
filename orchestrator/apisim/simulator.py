"""The simulator's state machine: files, jobs, the scheduler and the simulated clock.

Independent of HTTP: :mod:`orchestrator.apisim.server` parses requests, calls these methods
and renders the records in the OpenAI or Azure shape. Every call first advances the jobs to
the current simulated time (:meth:`Simulator.tick`), processing transitions in time order, so
a quota frees its slot at the instant the previous job ended, however rarely anyone asks.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.apisim import jobspec, models
from orchestrator.apisim.clock import SimClock
from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.faults import OPERATIONS, Faults
from orchestrator.apisim.store import FileRecord, JobRecord, Store, record_dict
from orchestrator.apisim.surface import StepMetrics, SurfaceInputs, curve
from orchestrator.apisim.timeline import CheckpointView, Event, checkpoints, events, result_csv
from orchestrator.core.errors import UsageError

__all__ = ["Simulator"]

QUEUE_SECONDS = 5.0
STATE_VERSION = 1


class Simulator:
    """All files and jobs of one simulated provider (OpenAI and Azure side by side)."""

    OPS = OPERATIONS

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        speed: float = 1.0,
        faults: Faults | None = None,
        clock: SimClock | None = None,
        today: Callable[[], datetime.date] | None = None,
    ) -> None:
        self.store = Store(state_dir)
        #: the real date, for model shutdowns (injectable: tests set a day)
        self.today: Callable[[], datetime.date] = today or datetime.date.today
        self.models = models.default_models()
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.nth = 0
        self._curves: dict[str, list[StepMetrics]] = {}
        #: Azure's deployments by name (:mod:`.chat`; in memory only)
        self.deployments: dict[str, dict[str, Any]] = {}
        saved = self.store.load()
        start = None
        self.faults = faults or Faults()
        cursor = None
        if saved is not None:
            try:
                start, cursor = float(saved["sim_now"]), float(saved["cursor"])
                self.nth = int(saved["nth"])
                self.files = {k: FileRecord(**v) for k, v in saved["files"].items()}
                self.jobs = {k: JobRecord(**v) for k, v in saved["jobs"].items()}
                for api, entries in (saved.get("models") or {}).items():
                    if api in models.APIS:
                        self.models[api] = models.parse_list(entries, f"models.{api}")
            except (KeyError, TypeError, ValueError, AttributeError, UsageError) as exc:
                raise UsageError(
                    f"{self.store.state_path}: not a simulator state ({type(exc).__name__}: {exc})"
                ) from None
            if faults is None:
                self.faults = Faults.from_dict(saved.get("faults"), str(self.store.state_path))
        try:
            self.clock = clock or SimClock(speed, start=start)
        except ValueError as exc:
            raise UsageError(f"speed: {exc}") from None
        self._cursor = self.clock.now() if cursor is None else cursor
        self.save()

    # -- persistence ---------------------------------------------------------------------
    def save(self) -> None:
        with self.lock:
            self.store.save(
                {
                    "version": STATE_VERSION,
                    "sim_now": self.clock.now(),
                    "cursor": self._cursor,
                    "nth": self.nth,
                    "files": {k: record_dict(v) for k, v in self.files.items()},
                    "jobs": {k: record_dict(v) for k, v in self.jobs.items()},
                    "faults": self.faults.to_dict(),
                    "models": self.models,
                }
            )

    def close(self) -> None:
        """Save and release the state folder (a temporary one is removed)."""
        with self.lock:
            self.save()
            self.store.close()

    def advance(self, seconds: float) -> float:
        """Move the simulated clock ahead (and the jobs with it)."""
        with self.lock:
            now = self.clock.advance(seconds)
            self.tick()
            return now

    def set_faults(self, faults: Faults) -> None:
        with self.lock:
            self.faults = faults
            self.save()

    # -- the model lists -----------------------------------------------------------------
    def _api_of(self, api: str) -> str:
        if api not in models.APIS:
            raise UsageError(f"api: expected one of {', '.join(models.APIS)}, got {api!r}")
        return api

    def base_models(self, api: str = "openai") -> list[dict[str, Any]]:
        """The base-model list of ``api`` (entries, see :mod:`.models`), a copy."""
        with self.lock:
            return [dict(e) for e in self.models[self._api_of(api)]]

    def set_models(self, entries: list[Any], api: str = "openai") -> list[dict[str, Any]]:
        """Replace ``api``'s base-model list (entries are checked: :class:`UsageError`)."""
        with self.lock:
            api = self._api_of(api)
            self.models[api] = models.parse_list(entries, "data")
            self.save()
            return self.base_models(api)

    def add_model(
        self,
        model_id: str,
        *,
        created: int | None = None,
        owned_by: str = "system",
        shutdown_date: datetime.date | str | None = None,
        fine_tunable: bool = True,
        api: str = "openai",
    ) -> dict[str, Any]:
        """Add (or update, by id) one base model of ``api``: "release" a newer snapshot, or
        announce a shutdown. Returns the entry."""
        day = (
            shutdown_date.isoformat() if isinstance(shutdown_date, datetime.date) else shutdown_date
        )
        raw = {
            "id": model_id,
            "created": created,
            "owned_by": owned_by,
            "shutdown_date": day,
            "fine_tunable": fine_tunable,
        }
        return self.put_model(raw, api)

    def put_model(self, raw: Any, api: str = "openai") -> dict[str, Any]:
        """:meth:`add_model` from a JSON entry (``POST /_sim/models``)."""
        with self.lock:
            api = self._api_of(api)
            entry = models.parse_entry(raw, "model")
            kept = [e for e in self.models[api] if e["id"] != entry["id"]]
            self.models[api] = [*kept, entry]
            self.save()
            return dict(entry)

    def _fine_tuned_models(self, api: str) -> list[dict[str, Any]]:
        """The models made by succeeded jobs of ``api`` (the provider lists them too)."""
        found = []
        for job in sorted(self.jobs.values(), key=lambda j: j.nth):
            if job.api != api or job.status != "succeeded":
                continue
            entry: dict[str, Any] = {
                "id": job.fine_tuned_model,
                "created": int(job.finished_at or job.created_at),
                "owned_by": "org-apisim" if api == "openai" else "organization-owner",
                "shutdown_date": None,
                "fine_tunable": False,
            }
            if api == "azure":
                entry["model"], entry["fine_tune"] = job.model, job.id
            found.append(entry)
        return found

    def list_models(self, api: str) -> list[dict[str, Any]]:
        """What ``GET /models`` shows: the base models, then the fine-tuned ones."""
        with self.lock:
            self.tick()
            return [*self.base_models(api), *self._fine_tuned_models(api)]

    def get_model(self, api: str, model_id: str) -> dict[str, Any]:
        with self.lock:
            for entry in self.list_models(api):
                if entry["id"] == model_id:
                    return entry
            if api == "azure":
                raise ApiError(404, f"The model '{model_id}' does not exist.", param="model")
            raise ApiError(
                404, f"The model '{model_id}' does not exist", param="model",
                code="model_not_found",
            )  # fmt: skip

    def _refuse_retired(self, api: str, model: str) -> None:
        """A job on a listed base model that is shut down (or not fine-tunable) is refused
        the way the provider refuses it; a model the list does not name runs as before."""
        if "@" in model:  # an alias (gpt-4o-mini@latest) is the client's to resolve
            raise ApiError(
                400, f"Model {model} is not available for fine-tuning or does not exist.",
                param="model", code="model_not_available",
            )  # fmt: skip
        entry = next((e for e in self.models[api] if e["id"] == model), None)
        if entry is None:
            return
        day = models.shutdown_of(entry)
        gone = day is not None and day <= self.today()
        if not gone and entry["fine_tunable"]:
            return
        if api == "azure":
            why = f" (fine-tuning retired on {day.isoformat()})" if gone and day else ""
            raise ApiError(
                400, f"The specified base model does not support fine-tuning.{why}",
                param="model",
            )  # fmt: skip
        why = f": it was shut down on {day.isoformat()}" if gone and day else ""
        raise ApiError(
            400, f"Model {model} is not available for fine-tuning{why}.",
            param="model", code="model_not_available",
        )  # fmt: skip

    # -- the scheduler -------------------------------------------------------------------
    def tick(self) -> float:
        """Apply every transition due by now, in time order; returns now."""
        with self.lock:
            now = self.clock.now()
            changed = False
            while (due := self._next_transition(now)) is not None:
                at, job = due
                self._apply(job, at)
                self._cursor = max(self._cursor, at)
                changed = True
            self._cursor = max(self._cursor, now)
            if changed:
                self.save()
            return now

    def _next_transition(self, now: float) -> tuple[float, JobRecord] | None:
        running = Counter(j.api for j in self.jobs.values() if j.status == "running")
        best: tuple[float, int, JobRecord] | None = None
        for job in self.jobs.values():
            if job.status == "validating_files":
                at = self._validation_end(job)
            elif job.status == "queued":
                quota = self.faults.max_running.get(job.api)
                if quota is not None and running[job.api] >= quota:
                    continue
                at = max((job.validated_at or job.created_at) + QUEUE_SECONDS, self._cursor)
            elif job.status == "running":
                at = job.step_time(job.fail_at_step or job.total_steps)
            else:
                continue
            if at <= now and (best is None or (at, job.nth) < best[:2]):
                best = (at, job.nth, job)
        return None if best is None else (best[0], best[2])

    def _validation_end(self, job: JobRecord) -> float:
        ready = [job.created_at]
        for fid in (job.training_file, job.validation_file):
            if fid is not None:
                record = self.files.get(fid)
                if record is None or record.ready_at is None:
                    return float("inf")
                ready.append(record.ready_at)
        return max(ready) + 3.0 + 2.0 * job.n_train / 1000

    def _apply(self, job: JobRecord, at: float) -> None:
        if job.status == "validating_files":
            if job.fail_code is not None and job.fail_at_step is None:
                self._fail(job, at)
            else:
                job.status, job.validated_at = "queued", at
        elif job.status == "queued":
            job.status, job.started_at = "running", at
            if job.training_type == "developerTier":
                self._plan_preemptions(job)
        elif job.fail_at_step is not None:
            self._fail(job, at)
        else:
            job.status, job.finished_at = "succeeded", at
            job.trained_tokens = job.n_epochs * job.billed_tokens
            result = self._new_file(
                job.api,
                "step_metrics.csv" if job.api == "openai" else "results.csv",
                "fine-tune-results",
                result_csv(job, self.curve(job)),
                ready_at=at,
            )
            job.result_file = result.id

    def _plan_preemptions(self, job: JobRecord) -> None:
        """A Developer-tier job is pre-empted (paused, then resumed) at the configured
        fractions of its steps: planned when it starts, so its timeline stays a function of
        the simulated clock (how often and how long Azure pauses is a guess)."""
        for fraction, seconds in self.faults.developer_pauses:
            step = max(1, min(job.total_steps, round(fraction * job.total_steps)))
            if step >= job.total_steps:
                continue
            at = job.step_time(step)
            job.pauses.append([at, at + seconds])

    def _fail(self, job: JobRecord, at: float) -> None:
        job.status, job.finished_at = "failed", at
        job.error = {"code": job.fail_code, "message": job.fail_message, "param": job.fail_param}
        if job.started_at is not None:
            job.trained_tokens = job.billed_tokens * job.steps_done(at) // job.steps_per_epoch

    # -- files ---------------------------------------------------------------------------
    def _new_file(
        self, api: str, filename: str, purpose: str, data: bytes, ready_at: float | None
    ) -> FileRecord:
        record = FileRecord(
            id=f"file-{secrets.token_hex(12)}",
            api=api,
            filename=filename,
            purpose=purpose,
            bytes=len(data),
            created_at=self.clock.now(),
            ready_at=ready_at,
        )
        self.store.put_blob(record.id, data)
        self.files[record.id] = record
        return record

    def create_file(self, api: str, filename: str, purpose: str, data: bytes) -> FileRecord:
        """Store an upload; it becomes ``processed`` after the configured delay."""
        with self.lock:
            now = self.tick()
            if not filename:
                raise ApiError(400, "A file is required.", param="file")
            jobspec.check_purpose(purpose)
            if purpose == "fine-tune" and not filename.endswith(".jsonl"):
                raise ApiError(
                    400, f"Invalid file format for Fine-Tuning API. Must be .jsonl: {filename}",
                    param="file",
                )  # fmt: skip
            stuck = self.faults.stuck(filename)
            ready = None if stuck else now + self.faults.file_processing_seconds
            record = self._new_file(api, filename, purpose, data, ready)
            self.save()
            return record

    def get_file(self, api: str, file_id: str) -> FileRecord:
        with self.lock:
            self.tick()
            record = self.files.get(file_id)
            if record is None or record.api != api or record.deleted:
                raise ApiError(404, f"No such File object: {file_id}", param="id")
            return record

    def list_files(self, api: str, purpose: str | None = None) -> list[FileRecord]:
        """Files of ``api``, oldest first."""
        with self.lock:
            self.tick()
            return [
                f
                for f in self.files.values()
                if f.api == api and not f.deleted and (purpose is None or f.purpose == purpose)
            ]

    def delete_file(self, api: str, file_id: str) -> FileRecord:
        with self.lock:
            record = self.get_file(api, file_id)
            record.deleted = True
            self.store.blob_path(file_id).unlink(missing_ok=True)
            self.save()
            return record

    def file_content(self, api: str, file_id: str) -> bytes:
        with self.lock:
            record = self.get_file(api, file_id)
            return self.store.blob_path(record.id).read_bytes()

    # -- jobs ----------------------------------------------------------------------------
    def create_job(self, api: str, body: Any, version: str = "") -> JobRecord:
        """Validate a create request and start the job (``validating_files``).
        ``version``: Azure's ``api-version``, or ``v1``."""
        with self.lock:
            now = self.tick()
            spec = jobspec.parse_create(api, body, version)
            self._refuse_retired(api, spec.model)
            if api == "azure":
                self._refuse_tier(spec.model, spec.training_type)
                self._refuse_new_customer(spec.model)
                self._refuse_quota()
            train = self._job_file(api, spec.training_file, "training_file")
            valid = (
                self._job_file(api, spec.validation_file, "validation_file")
                if spec.validation_file
                else None
            )
            analysis = jobspec.analyse(train, self.store.blob_path(train.id), spec.model)
            n_valid = 0
            if valid is not None:
                n_valid = jobspec.analyse(valid, self.store.blob_path(valid.id), spec.model)[
                    "n_examples"
                ]
            job_id = f"ftjob-{secrets.token_hex(12)}"
            job = jobspec.new_job(api, job_id, self.nth + 1, spec, analysis, n_valid, now)
            job.surface = version or None
            jobspec.check_steps(job)
            self.nth += 1
            fault = self.faults.job_fault(self.nth, spec.model, spec.suffix)
            jobspec.plan_failure(job, analysis, valid, n_valid, fault)
            self.jobs[job.id] = job
            self.save()
            return job

    def _refuse_tier(self, model: str, training_type: str | None) -> None:
        """A model Azure does not train in this tier (the wording is a guess)."""
        from orchestrator.catalog.azure import TIER_NAMES, TIERS, azure_model

        known = azure_model(model)
        tier = TIER_NAMES.get(training_type or "Standard", "standard")
        if known is None or tier in known.azure_tiers:
            return
        raise ApiError(
            400,
            f"The base model {model} cannot be fine-tuned with trainingType "
            f"'{TIERS[tier]}' in this region. Supported training types: "
            + ", ".join(TIERS[t] for t in known.azure_tiers) + ".",
            param="trainingType", azure_code="invalidPayload",
        )  # fmt: skip

    def _refuse_new_customer(self, model: str) -> None:
        """An OpenAI model Azure trains for existing customers only, asked by a new one
        (``azure_new_customer``; the wording is a guess)."""
        from orchestrator.catalog.azure import azure_model

        known = azure_model(model)
        if not self.faults.azure_new_customer or known is None or not known.azure_existing_only:
            return
        raise ApiError(
            400,
            f"Fine-tuning of the base model {model} is available to existing customers only.",
            param="model", azure_code="invalidPayload",
        )  # fmt: skip

    def _refuse_quota(self) -> None:
        """Azure's per-resource quotas: queued (pending) jobs, then jobs in all (docs give
        the numbers; the statuses and wording are a guess)."""
        quota = self.faults.azure_quota
        jobs = [j for j in self.jobs.values() if j.api == "azure"]
        pending = sum(1 for j in jobs if j.status in ("validating_files", "queued"))
        if len(jobs) >= quota.total:
            raise ApiError(
                400,
                f"The resource has reached its quota of {quota.total} fine-tuning jobs. "
                "Delete completed jobs to create new ones.",
                azure_code="quotaExceeded",
            )
        unfinished = pending + sum(1 for j in jobs if j.status in ("running", "paused"))
        if quota.in_flight is not None and unfinished >= quota.in_flight:
            raise ApiError(
                429,
                f"The resource already has {quota.in_flight} fine-tuning jobs in progress, the "
                "most it allows. Wait for a job to finish.",
                azure_code="quotaExceeded",
                headers={"retry-after": "60", "x-should-retry": "false"},
            )
        if pending >= quota.queued:
            raise ApiError(
                429,
                f"The resource already has {quota.queued} queued fine-tuning jobs, the "
                "most it allows. Wait for a job to finish.",
                azure_code="quotaExceeded",
                headers={"retry-after": "60", "x-should-retry": "false"},
            )

    def _job_file(self, api: str, file_id: str, param: str) -> FileRecord:
        record = self.files.get(file_id)
        if record is None or record.api != api or record.deleted:
            raise ApiError(400, f"invalid {param}: {file_id}", param=param, code="invalid_file")
        if record.purpose != "fine-tune":
            raise ApiError(
                400, f"File {file_id} has purpose {record.purpose!r}, expected 'fine-tune'.",
                param=param, code="invalid_file",
            )  # fmt: skip
        return record

    def get_job(self, api: str, job_id: str) -> JobRecord:
        with self.lock:
            self.tick()
            job = self.jobs.get(job_id)
            if job is None or job.api != api:
                raise ApiError(404, f"Fine-tuning job {job_id} not found.", param="fine_tune_id")
            return job

    def list_jobs(self, api: str, metadata: dict[str, str] | None = None) -> list[JobRecord]:
        """Jobs of ``api``, newest first, those whose metadata contains ``metadata``."""
        with self.lock:
            self.tick()
            wanted = metadata or {}
            found = [
                j
                for j in self.jobs.values()
                if j.api == api and all((j.metadata or {}).get(k) == v for k, v in wanted.items())
            ]
            return sorted(found, key=lambda j: (j.created_at, j.nth), reverse=True)

    def cancel_job(self, api: str, job_id: str) -> JobRecord:
        with self.lock:
            job = self.get_job(api, job_id)
            if job.terminal:
                raise ApiError(400, f"Job {job_id} has already {job.status}; cannot cancel.",
                               code="invalid_state")  # fmt: skip
            now = self.clock.now()
            job.trained_tokens = (
                job.billed_tokens * job.steps_done(now) // job.steps_per_epoch
                if job.started_at is not None
                else 0
            )
            job.status, job.finished_at = "cancelled", now
            self.save()
            return job

    def pause_job(self, api: str, job_id: str) -> JobRecord:
        with self.lock:
            job = self.get_job(api, job_id)
            if job.status != "running" or job.paused:
                raise ApiError(400, f"Job {job_id} is not running; cannot pause.",
                               code="invalid_state")  # fmt: skip
            job.pauses.append([self.clock.now(), None])
            self.save()
            return job

    def resume_job(self, api: str, job_id: str) -> JobRecord:
        with self.lock:
            job = self.get_job(api, job_id)
            if not job.paused:
                raise ApiError(400, f"Job {job_id} is not paused; cannot resume.",
                               code="invalid_state")  # fmt: skip
            job.pauses[-1][1] = self.clock.now()
            self.save()
            return job

    def delete_job(self, api: str, job_id: str) -> None:
        """Azure only: forget a finished job."""
        with self.lock:
            job = self.get_job(api, job_id)
            if not job.terminal:
                raise ApiError(400, f"Job {job_id} is {job.status}; cancel it first.",
                               code="invalid_state")  # fmt: skip
            del self.jobs[job_id]
            self.save()

    def curve(self, job: JobRecord) -> list[StepMetrics]:
        """The job's whole curve (cached; computed from the surface model)."""
        cached = self._curves.get(job.id)
        if cached is None:
            hp = jobspec.resolved(job)
            inputs = SurfaceInputs(
                hp, job.n_train, job.validation_file is not None, job.seed, job.data_key
            )
            cached = curve(inputs)
            self._curves[job.id] = cached
        return cached

    def job_events(self, api: str, job_id: str) -> list[Event]:
        """Events so far, oldest first."""
        with self.lock:
            job = self.get_job(api, job_id)
            if job.started_at is None and job.finished_at is None:
                return events(job, [], self.clock.now())
            return events(job, self.curve(job), self.clock.now())

    def job_checkpoints(self, api: str, job_id: str) -> list[CheckpointView]:
        """Checkpoints so far, oldest first."""
        with self.lock:
            job = self.get_job(api, job_id)
            if job.started_at is None:
                return []
            return checkpoints(job, self.curve(job), self.clock.now())

    # -- the request log -----------------------------------------------------------------
    def log_request(self, entry: dict[str, Any]) -> None:
        self.store.log({"sim_time": round(self.clock.now(), 3), **entry})

    def requests(self, op: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.store.read_log() if op is None or e.get("op") == op]
