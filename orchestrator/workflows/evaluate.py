"""``ftsweep evaluate``: score the top trials' models on the sweep's held-out file.

The sweep file's ``evaluate:`` block names the file and the scorers
(:mod:`orchestrator.evaluation`). :func:`evaluate_sweep` ranks the finished trials by the
sweep's objective, takes the best ``top`` that have a model (a trial without one, an earlier
epoch whose job kept no checkpoint, is named in the notes with how to get its model), has
each model answer every held-out prompt and scores the answers against the references (the
training data's stop sequence, which ends every completion, taken off them):

* **local**: the job's model folder or LoRA adapter (its base from the adapter's config),
  greedy, stopped at the training data's stop sequences (:mod:`.evaluate_local`);
* **openai**: chat completions of the fine-tuned model id through the ``openai`` SDK;
* **azure**: the same through a Developer deployment of the model that it creates first
  through Azure Resource Manager, waits for (``provisioningState`` ``Succeeded``) and always
  deletes after (:mod:`orchestrator.backends.remote.arm`; Developer deployments have no hourly
  hosting fee: the cost is said before it starts). It needs the subscription and resource
  group (``backend.options.subscription_id`` / ``resource_group``, or
  ``AZURE_SUBSCRIPTION_ID`` / ``AZURE_RESOURCE_GROUP``: exit 2 naming the missing one) and a
  management token (``AZURE_MANAGEMENT_TOKEN`` or Entra ID sign-in: exit 1 without), both
  checked before anything is generated.

Each trial's scores (``eval_<scorer>``) are logged to its MLflow child run at the step of its
epoch count (an earlier epoch told as a trial shares its parent's run, at its own epoch) and
recorded on the study under :data:`EVALUATIONS` (Optuna cannot change a finished trial's user
attributes), by trial number with the model they scored. Running it again scores only what is
not recorded yet for the same model and scorers: nothing is logged twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.attrs import TrialAttrs
from orchestrator.core.errors import OrchestratorError, SpecError

if TYPE_CHECKING:
    import optuna

    from orchestrator.backends.remote.arm import ArmDeployments
    from orchestrator.config import EvaluateSpec
    from orchestrator.evaluation import EvalExample
    from orchestrator.plan.sweep import SweepPlan
    from orchestrator.stores.study import Stores

__all__ = [
    "DEVELOPER_HOURLY_USD",
    "EVALUATIONS",
    "Evaluation",
    "TrialScores",
    "evaluate_sweep",
    "evaluations",
    "rank_by",
]

#: the study's user attribute with the scores: ``{"<trial>": {"model": ..., "scores": {...}}}``
EVALUATIONS = "ftsweep.evaluations"
#: Azure's hourly hosting fee of a Developer deployment (none: it is deleted after 24 h)
DEVELOPER_HOURLY_USD = 0.0

Answerer = Callable[[str, Sequence["EvalExample"]], list[str]]


@dataclass(frozen=True)
class TrialScores:
    """One evaluated trial: its model, scores and whether they were recorded before."""

    trial: int
    value: float | None
    model: str
    scores: dict[str, float]
    run_id: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_sweep` did: the scored trials, best objective first."""

    sweep: str
    objective: str
    metrics: tuple[str, ...]
    n_examples: int
    rows: tuple[TrialScores, ...]
    notes: tuple[str, ...] = field(default=())


def evaluations(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The recorded scores by trial number (``{"model": ..., "scores": {...}}``)."""
    raw = study.user_attrs.get(EVALUATIONS)
    if not isinstance(raw, dict):
        return {}
    return {int(k): v for k, v in raw.items() if str(k).isdigit() and isinstance(v, dict)}


def rank_by(study: optuna.Study, metric: str) -> list[tuple[optuna.trial.FrozenTrial, float]]:
    """Completed trials with a recorded ``metric`` (``eval_<scorer>``), best (highest) first;
    ties go to the better objective."""
    found = evaluations(study)
    trials = study.get_trials(deepcopy=False)
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    ranked = []
    for number, entry in found.items():
        value = (entry.get("scores") or {}).get(metric)
        if number < len(trials) and isinstance(value, int | float):
            t = trials[number]
            if t.state.name == "COMPLETE":
                ranked.append((t, float(value)))
    ranked.sort(key=lambda p: (-p[1], sign * float(p[0].value or 0.0)))
    return ranked


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return sorted(done, key=lambda t: (sign * float(t.value or 0.0), t.number))


def _epoch_of(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> int:
    from orchestrator.tracking.recipe import request_of_trial

    epochs = trial.params.get("n_epochs")
    if epochs is None:
        request = request_of_trial(trial, study)
        epochs = request.hyperparameters.n_epochs if request is not None else 0
    return int(epochs)


def evaluate_sweep(
    spec_path: str | Path,
    top: int = 3,
    *,
    say: Callable[[str], None] = lambda _: None,
    answerer: Answerer | None = None,
) -> Evaluation:
    """Score the ``top`` best trials that have a model on the sweep's ``evaluate.file`` (see
    the module docstring); ``say`` hears progress and the deployment's cost. ``answerer``
    replaces the backend's generation (a third-party backend's, or a test's)."""
    import optuna

    from orchestrator.evaluation import load_scorers, read_examples, score_answers
    from orchestrator.plan.sweep import plan_sweep
    from orchestrator.stores.read import optuna_url
    from orchestrator.stores.study import resolve_stores, storage
    from orchestrator.tracking.recipe import missing_model_note

    if top < 1:
        raise SpecError("--top", "", "must be at least 1")
    shown = str(spec_path)
    plan = plan_sweep(spec_path)
    spec = plan.spec
    if spec.evaluate is None:
        raise SpecError(
            shown, "evaluate", "no evaluate: block (a held-out file and its scorers; README, "
            "\"Task metrics\")",
        )  # fmt: skip
    ev = spec.evaluate
    scorers = load_scorers(ev, shown)
    examples = read_examples(ev.file, ev.limit)
    from orchestrator.results.read import open_results

    name = open_results(spec_path, current=True).study.study_name  # exists, or exit 2
    study = optuna.load_study(study_name=name, storage=storage(optuna_url(spec)))
    recorded = evaluations(study)
    notes: list[str] = []
    chosen: list[optuna.trial.FrozenTrial] = []
    for t in _ranked(study):
        if len(chosen) >= top:
            break
        if t.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL):
            chosen.append(t)
        else:
            notes.append(missing_model_note(t) or f"trial {t.number} kept no model")
    if not chosen:
        raise OrchestratorError(f"sweep {spec.name!r} has no finished trial with a model yet")
    stores = resolve_stores(spec)
    metrics = tuple(s.metric for s in scorers)
    # the training data's stop sequence ends every completion; a model's answer stops before it
    stop = plan.train.stop_sequence
    references = [
        e.reference[: -len(stop)] if stop and e.reference.endswith(stop) else e.reference
        for e in examples
    ]
    todo = [t for t in chosen if not _is_recorded(recorded.get(t.number), _model(t), metrics)]
    answer = answerer or (_answerer(plan, stores, study, ev, say) if todo else None)
    rows: list[TrialScores] = []
    tracker = _tracker(spec.name, stores) if todo else None
    for t in chosen:
        model = _model(t)
        run_id = t.user_attrs.get(TrialAttrs.MLFLOW_RUN)
        if t not in todo:
            scores = {m: float(recorded[t.number]["scores"][m]) for m in metrics}
            rows.append(TrialScores(t.number, t.value, model, scores, run_id, cached=True))
            continue
        assert answer is not None
        say(f"trial {t.number}: answering {len(examples)} held-out prompts with {model}")
        answers = answer(model, examples)
        scores = score_answers(scorers, answers, references)
        if tracker is not None and run_id:
            _log(tracker, str(run_id), _epoch_of(t, study), scores)
        entry = recorded.get(t.number) or {"model": model, "scores": {}}
        if entry.get("model") != model:
            entry = {"model": model, "scores": {}}
        entry["scores"] = {**entry["scores"], **scores}
        recorded[t.number] = entry
        study.set_user_attr(EVALUATIONS, {str(k): v for k, v in sorted(recorded.items())})
        rows.append(TrialScores(t.number, t.value, model, scores, run_id))
    return Evaluation(
        spec.name, spec.objective.metric, metrics, len(examples), tuple(rows), tuple(notes)
    )


def _model(trial: optuna.trial.FrozenTrial) -> str:
    return str(trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL))


def _is_recorded(entry: dict[str, Any] | None, model: str, metrics: Sequence[str]) -> bool:
    if not entry or entry.get("model") != model:
        return False
    scores = entry.get("scores") or {}
    return all(isinstance(scores.get(m), int | float) for m in metrics)


def _tracker(experiment: str, stores: Stores) -> Any:
    from orchestrator.tracking import Tracker

    return Tracker(stores.mlflow, experiment, stores.artifacts)


def _log(tracker: Any, run_id: str, step: int, scores: dict[str, float]) -> None:
    """Log the scores at ``step``, skipping any point already there (a re-run after an
    interruption between the log and the study's record)."""
    from orchestrator.backends.base import MetricPoint

    have = tracker.history(run_id, list(scores))
    points = [
        MetricPoint(step, name, value)
        for name, value in scores.items()
        if step not in {s for s, _ in have.get(name, [])}
    ]
    if points:
        tracker.log_points(run_id, points)


def _answerer(
    plan: SweepPlan, stores: Stores, study: optuna.Study, ev: EvaluateSpec,
    say: Callable[[str], None],
) -> Answerer:  # fmt: skip
    backend = plan.spec.backend.name
    if backend == "local":
        from orchestrator.workflows.evaluate_local import local_answerer

        return local_answerer(study, ev)
    if backend not in ("openai", "azure"):
        raise OrchestratorError(
            f"ftsweep evaluate generates with the local, openai and azure backends, not {backend!r}"
        )
    made = plan.make_backend(stores.backend_dir(backend))
    arm = _arm(made) if backend == "azure" else None  # checked before any call
    client = made.client  # type: ignore[attr-defined]

    def chat(model: str, examples: Sequence[EvalExample]) -> list[str]:
        return [_chat(client, model, e, ev) for e in examples]

    if arm is None:
        return chat
    from orchestrator.backends.remote.arm import model_format

    fmt = model_format(plan.spec.backend.model)

    def deployed(model: str, examples: Sequence[EvalExample]) -> list[str]:
        name = "ftsweep-eval-" + hashlib.sha256(model.encode()).hexdigest()[:12]
        say(
            f"deploying {model} as {name} on {arm.target.account} through Azure Resource "
            f"Manager (Developer tier: ${DEVELOPER_HOURLY_USD:.2f}/h hosting, inference at the "
            "base model's per-token rates; deleted when done)"
        )
        with arm.deployed(name, model, fmt=fmt, warn=lambda m: say(f"warning: {m}")):
            return chat(name, examples)

    return deployed


def _arm(backend: Any) -> ArmDeployments:
    """The azure backend's ARM deployments: its options checked (exit 2 naming the missing
    one) and a management token got (exit 1) before anything is generated."""
    import os

    from orchestrator.backends.remote.arm import ArmDeployments, ArmTarget, management_token

    opts = backend.azure_options
    target = ArmTarget.resolve(
        subscription_id=opts.subscription_id,
        resource_group=opts.resource_group,
        account=opts.account,
        management_endpoint=opts.management_endpoint,
        endpoint=opts.endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT", ""),
    )
    first, most = opts.poll_interval or (2.0, 15.0)
    return ArmDeployments(
        target, management_token(), timeout=opts.timeout, wait=opts.deployment_wait,
        poll=(first, most),
    )  # fmt: skip


def _call(what: str, fn: Callable[[], Any]) -> Any:
    import openai

    try:
        return fn()
    except openai.APIError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OrchestratorError(f"{what}: {first[:300]}") from exc


def _chat(client: Any, model: str, example: EvalExample, ev: EvaluateSpec) -> str:
    messages = list(example.messages) or [{"role": "user", "content": example.prompt or ""}]
    response = _call("chat completion", lambda: client.chat.completions.create(
        model=model, messages=messages, max_tokens=ev.max_tokens, temperature=ev.temperature,
    ))  # fmt: skip
    content = response.choices[0].message.content if response.choices else None
    return str(content or "")
