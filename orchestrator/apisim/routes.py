"""The API's routes: one small function per operation, dialect-aware through ``ctx.api``.

Paths are relative to the dialect's prefix (``/v1`` for OpenAI, ``/openai`` for Azure's data
plane, ``/subscriptions`` for its control plane, Azure Resource Manager: deployments only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apisim import chat, models, render
from orchestrator.apisim.errors import ApiError
from orchestrator.apisim.simulator import Simulator

__all__ = ["ROUTES", "Ctx", "Reply", "allowed", "match"]


@dataclass
class Ctx:
    """One parsed request."""

    sim: Simulator
    api: str
    ids: tuple[str, ...]
    query: dict[str, list[str]]
    json: Any = None
    form: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)
    #: Azure: ``v1`` (``/openai/v1/...``) or the ``api-version``; OpenAI: ""
    version: str = ""

    def job(self, record: Any) -> dict[str, Any]:
        return render.job(record, self.sim.clock.now())

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    """What to send back: JSON (a dict), raw bytes, or nothing (204)."""

    status: int = 200
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _created(ctx: Ctx, body: dict[str, Any], location: str) -> Reply:
    if ctx.api == "azure":
        return Reply(201, body, {"Location": location})
    return Reply(200, body)


def files_create(ctx: Ctx) -> Reply:
    try:
        purpose = ctx.form.get("purpose", (None, b""))[1].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid purpose: not UTF-8 text.", param="purpose") from None
    filename, data = ctx.form.get("file", (None, b""))
    record = ctx.sim.create_file(ctx.api, filename or "", purpose, data)
    return _created(ctx, render.file_object(record, ctx.api, ctx.sim.clock.now()), record.id)


def files_list(ctx: Ctx) -> Reply:
    records = ctx.sim.list_files(ctx.api, ctx.arg("purpose"))
    order = ctx.arg("order") or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': {order!r}.", param="order")
    if order == "desc":
        records = sorted(records, key=lambda f: f.created_at, reverse=True)
    now = ctx.sim.clock.now()
    body = render.page(
        records,
        lambda f: f.id,
        lambda f: render.file_object(f, ctx.api, now),
        after=ctx.arg("after"),
        limit=render.limit_param(ctx.arg("limit"), 10_000, 10_000),
        ids=True,
    )
    body["first_id"], body["last_id"] = body["first_id"] or "", body["last_id"] or ""
    return Reply(200, body)


def files_retrieve(ctx: Ctx) -> Reply:
    record = ctx.sim.get_file(ctx.api, ctx.ids[0])
    return Reply(200, render.file_object(record, ctx.api, ctx.sim.clock.now()))


def files_delete(ctx: Ctx) -> Reply:
    record = ctx.sim.delete_file(ctx.api, ctx.ids[0])
    return Reply(200, {"id": record.id, "object": "file", "deleted": True})


def files_content(ctx: Ctx) -> Reply:
    return Reply(200, ctx.sim.file_content(ctx.api, ctx.ids[0]))


def jobs_create(ctx: Ctx) -> Reply:
    job = ctx.sim.create_job(ctx.api, ctx.json, ctx.version)
    return _created(ctx, ctx.job(job), job.id)


def jobs_list(ctx: Ctx) -> Reply:
    metadata = None
    if ctx.api == "openai":
        metadata = {
            m.group(1): values[0]
            for name, values in ctx.query.items()
            if (m := re.fullmatch(r"metadata\[(.+)\]", name))
        }
    jobs = ctx.sim.list_jobs(ctx.api, metadata)
    body = render.page(
        jobs,
        lambda j: j.id,
        ctx.job,
        after=ctx.arg("after"),
        limit=render.limit_param(ctx.arg("limit"), 20, 100),
    )
    return Reply(200, body)


def jobs_retrieve(ctx: Ctx) -> Reply:
    return Reply(200, ctx.job(ctx.sim.get_job(ctx.api, ctx.ids[0])))


def jobs_delete(ctx: Ctx) -> Reply:
    if ctx.api != "azure":
        raise ApiError(404, "Unknown request URL: DELETE /v1/fine_tuning/jobs/{id}.")
    ctx.sim.delete_job(ctx.api, ctx.ids[0])
    return Reply(204)


def jobs_cancel(ctx: Ctx) -> Reply:
    return Reply(200, ctx.job(ctx.sim.cancel_job(ctx.api, ctx.ids[0])))


def _openai_only(ctx: Ctx, what: str) -> None:
    if ctx.api != "openai":
        raise ApiError(404, f"The {what} operation is not supported by this API version.")


def jobs_pause(ctx: Ctx) -> Reply:
    _openai_only(ctx, "pause")
    return Reply(200, ctx.job(ctx.sim.pause_job(ctx.api, ctx.ids[0])))


def jobs_resume(ctx: Ctx) -> Reply:
    _openai_only(ctx, "resume")
    return Reply(200, ctx.job(ctx.sim.resume_job(ctx.api, ctx.ids[0])))


def jobs_events(ctx: Ctx) -> Reply:
    found = ctx.sim.job_events(ctx.api, ctx.ids[0])
    if ctx.api == "openai":
        found = found[::-1]  # newest first; Azure lists oldest first
    body = render.page(
        found,
        lambda e: e.id,
        render.event,
        after=ctx.arg("after"),
        limit=render.limit_param(ctx.arg("limit"), 20, 100),
    )
    return Reply(200, body)


def jobs_checkpoints(ctx: Ctx) -> Reply:
    job_id = ctx.ids[0]
    found = ctx.sim.job_checkpoints(ctx.api, job_id)[::-1]  # newest first
    body = render.page(
        found,
        lambda c: c.id,
        lambda c: render.checkpoint(c, job_id),
        after=ctx.arg("after"),
        limit=render.limit_param(ctx.arg("limit"), 10, 100),
        ids=True,
    )
    return Reply(200, body)


def models_list(ctx: Ctx) -> Reply:
    render_one = models.openai_model if ctx.api == "openai" else models.azure_model
    data = [render_one(entry) for entry in ctx.sim.list_models(ctx.api)]
    return Reply(200, {"object": "list", "data": data})


def models_retrieve(ctx: Ctx) -> Reply:
    render_one = models.openai_model if ctx.api == "openai" else models.azure_model
    return Reply(200, render_one(ctx.sim.get_model(ctx.api, ctx.ids[0])))


def chat_create(ctx: Ctx) -> Reply:
    with ctx.sim.lock:
        return Reply(200, chat.chat_completion(ctx.sim, ctx.api, ctx.json, None))


def deployment_chat_create(ctx: Ctx) -> Reply:
    _azure_only(ctx)
    with ctx.sim.lock:
        return Reply(200, chat.chat_completion(ctx.sim, ctx.api, ctx.json, ctx.ids[0]))


def _azure_only(ctx: Ctx) -> None:
    if ctx.api != "azure":
        raise ApiError(404, "Deployments are Azure's: not on this API.")


def _deployment(method: str) -> Handler:
    def handler(ctx: Ctx) -> Reply:
        _azure_only(ctx)
        sub, group, account, name = ctx.ids
        resource = (
            f"/subscriptions/{sub}/resourceGroups/{group}/providers/"
            f"Microsoft.CognitiveServices/accounts/{account}"
        )
        with ctx.sim.lock:
            status, body = chat.deployment(ctx.sim, method, name, ctx.json, resource)
        return Reply(status, body)

    return handler


#: ARM's deployment path, relative to ``/subscriptions`` (the server's control-plane prefix)
ARM_DEPLOYMENT = (
    r"/{id}/resourceGroups/{id}/providers/Microsoft.CognitiveServices/accounts/{id}"
    r"/deployments/{id}"
)


_ID = r"([A-Za-z0-9_.:-]+)"
Handler = Callable[[Ctx], Reply]
#: (method, path pattern, operation name, handler)
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = [
    (method, re.compile(pattern.replace("{id}", _ID)), op, handler)
    for method, pattern, op, handler in (
        ("POST", r"/files", "files.create", files_create),
        ("GET", r"/files", "files.list", files_list),
        ("GET", r"/files/{id}", "files.retrieve", files_retrieve),
        ("DELETE", r"/files/{id}", "files.delete", files_delete),
        ("GET", r"/files/{id}/content", "files.content", files_content),
        ("POST", r"/fine_tuning/jobs", "jobs.create", jobs_create),
        ("GET", r"/fine_tuning/jobs", "jobs.list", jobs_list),
        ("GET", r"/fine_tuning/jobs/{id}", "jobs.retrieve", jobs_retrieve),
        ("DELETE", r"/fine_tuning/jobs/{id}", "jobs.delete", jobs_delete),
        ("POST", r"/fine_tuning/jobs/{id}/cancel", "jobs.cancel", jobs_cancel),
        ("POST", r"/fine_tuning/jobs/{id}/pause", "jobs.pause", jobs_pause),
        ("POST", r"/fine_tuning/jobs/{id}/resume", "jobs.resume", jobs_resume),
        ("GET", r"/fine_tuning/jobs/{id}/events", "jobs.events", jobs_events),
        ("GET", r"/fine_tuning/jobs/{id}/checkpoints", "jobs.checkpoints", jobs_checkpoints),
        ("GET", r"/models", "models.list", models_list),
        ("GET", r"/models/{id}", "models.retrieve", models_retrieve),
        ("POST", r"/chat/completions", "chat.create", chat_create),
        ("POST", r"/deployments/{id}/chat/completions", "chat.create", deployment_chat_create),
        # the control plane's (ARM): served under /subscriptions only (server.py)
        ("PUT", ARM_DEPLOYMENT, "deployments.create", _deployment("PUT")),
        ("GET", ARM_DEPLOYMENT, "deployments.retrieve", _deployment("GET")),
        ("DELETE", ARM_DEPLOYMENT, "deployments.delete", _deployment("DELETE")),
    )
]


def match(method: str, path: str) -> tuple[str, Handler, tuple[str, ...]] | None:
    """The operation for ``method path``, its handler and the ids in the path."""
    path = path.rstrip("/") or "/"
    for verb, pattern, op, handler in ROUTES:
        m = pattern.fullmatch(path)
        if m and verb == method:
            return op, handler, m.groups()
    return None


def allowed(path: str) -> list[str]:
    """The methods ``path`` takes (empty: no such path), for a 405's ``Allow``."""
    path = path.rstrip("/") or "/"
    return sorted({verb for verb, pattern, _, _ in ROUTES if pattern.fullmatch(path)})
