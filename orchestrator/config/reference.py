"""The sweep-file reference (``docs/sweep-file.md``), generated from the pydantic models.

``python -m orchestrator.config.reference > docs/sweep-file.md`` writes it; a test fails when
the file is not what this prints, and when a field has no entry in :data:`NOTES` (so a new
field cannot land undocumented). Types, defaults and bounds come from the models themselves.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from orchestrator.config.models import SweepSpec

__all__ = ["NOTES", "missing_notes", "render"]

#: what each field means, by its dotted path in the file
NOTES: dict[str, str] = {
    "name": "The sweep's name: the Optuna study and the MLflow experiment (letters, digits, "
    "`._-`).",
    "data": "The training data (JSONL, chat or prompt/completion); paths are relative to the "
    "sweep file.",
    "data.train": "The training file.",
    "data.valid": "The validation file (recommended: the objective is measured on it).",
    "backend": "Where trials train (`ftsweep backends` lists the installed ones).",
    "backend.name": "`local`, `openai`, `azure`, or a third-party backend's name.",
    "backend.model": "The base model: a provider's model name, or for `local` `tiny`, "
    "`smollm2-135m`, a folder, a GGUF file or a hub id.",
    "backend.options": "Backend-specific settings, checked by the backend before anything "
    "starts (`docs/backends.md`, `docs/local-trainer.md`).",
    "space": "The search space; an omitted parameter takes the recommended range.",
    "space.n_epochs": "Epochs: a value, a list of choices, or `{low, high}` (recommended 2-4).",
    "space.batch_size": "Examples per step: a value, choices, `{low, high}` or "
    "`{low_pct, high_pct}` of the training examples (recommended 0.01-4 %), log scale.",
    "space.learning_rate_multiplier": "The multiplier of the provider's (or trainer's) "
    "learning rate: a value, choices or `{low, high, log}` (recommended 0.02-0.2, log).",
    "space.prompt_loss_weight": "The weight of prompt tokens in the loss (local trainer only; "
    "the OpenAI and Azure APIs refuse it).",
    "objective": "What the sweep optimizes.",
    "objective.metric": "Any metric the backend reports at epoch ends (`full_valid_loss`, "
    "`full_valid_mean_token_accuracy`, `full_valid_exact_match`, ...).",
    "objective.direction": "`minimize` or `maximize`.",
    "objectives": "Several objectives instead of `objective` (the first is the primary: "
    "pruning and `best` rank by it), e.g. `full_valid_loss` and `cost_usd`; see `docs/search.md`.",
    "objectives.metric": "A metric the backend reports, or `cost_usd` (the trial's dollars).",
    "objectives.direction": "`minimize` or `maximize`.",
    "constraints": "Hard limits by metric name (`cost_usd` included): `{max: X}` or `{min: X}`; "
    "a trial outside them is never on the front nor the best.",
    "constraints.max": "The largest value allowed.",
    "constraints.min": "The smallest value allowed.",
    "trials": "Trials in the study in all (finished ones count on a rerun).",
    "parallel": "Jobs in flight at once (capped by the provider's concurrent-job limit).",
    "timeout_s": "Stop launching trials after this many seconds (running ones finish).",
    "target": "Stop once a trial's objective reaches this value.",
    "budget_usd": "Stop before spent plus committed cost would exceed this many dollars.",
    "seed": "The training seed sent with each job.",
    "sampler": "How configurations are proposed.",
    "sampler.name": "`auto`: a scrambled Sobol start, then TPE (measured in `docs/search.md`); "
    "or one of Optuna's samplers by name.",
    "sampler.epochs_as_trials": "Tell each completed job's earlier epochs to the study as "
    "trials of their own (free results); unset: on with `auto`, off with a named sampler.",
    "sampler.seed": "Unset: each worker draws its own (recorded in the study); a number makes "
    "one worker's sweep reproducible.",
    "pruner": "How losing trials are stopped early (their jobs cancelled).",
    "pruner.name": "The Optuna pruner.",
    "pruner.options": "The pruner's keyword options, checked as Optuna's constructor would.",
    "diagnosis": "Thresholds of the over/under-fitting rules (`docs/diagnosis.md`).",
    "evaluate": "Task metrics on a held-out file, scored by `ftsweep evaluate` (README, "
    '"Task metrics"); unset: none.',
    "evaluate.file": "The held-out file (the training data's formats): each example's last "
    "assistant message (or completion) is the reference answer to its prompt.",
    "evaluate.scorers": "`exact_match`, `label_accuracy`, `json_valid`, `contains`, a user "
    "scorer `module:function`, or the name of an entry point in group `ftsweep.scorers`; each "
    "is logged as `eval_<name>`.",
    "evaluate.labels": "`label_accuracy`: the known labels (the answer's first line, else its "
    "first token, must be the reference's); unset: the reference's first line.",
    "evaluate.json_schema": "`json_valid`: a JSON-schema file the answer must satisfy too.",
    "evaluate.limit": "Score only the file's first N examples; unset: all of them.",
    "evaluate.max_tokens": "New tokens per answer at most.",
    "evaluate.temperature": "Sampling temperature of the answers (0: greedy).",
    "storage": "Where results go; unset means the embedded stores under `mlruns/` unless "
    "`FTSWEEP_OPTUNA_STORAGE` or `MLFLOW_TRACKING_URI` say otherwise.",
    "storage.optuna": "An SQLAlchemy URL (`sqlite:///x.db`, `postgresql://...`) or `journal:PATH`.",
    "storage.mlflow": "A tracking URI (`http://...`, `sqlite:///...`) or a folder.",
    "enqueue": "Configurations to train first (a baseline, known good settings).",
    "prices": "USD per 1M trained tokens by model name, overriding the built-in price table.",
}
#: fields of the parameter models (``space.*``), documented once
PARAM_NOTES: dict[str, str] = {
    "value": "One fixed value.",
    "choices": "A list of values to choose from.",
    "low": "The range's lower end.",
    "high": "The range's upper end.",
    "log": "Search the range on a log scale.",
    "low_pct": "The lower end as a percentage of the training examples.",
    "high_pct": "The upper end as a percentage of the training examples.",
}
#: the diagnosis thresholds, documented in docs/diagnosis.md
DIAGNOSIS_NOTE = "A threshold of the diagnosis rules: see `docs/diagnosis.md`."


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _model_of(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if get_origin(tp) in (typing.Union, types.UnionType):
        models = [m for a in get_args(tp) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        args = get_args(tp)
        return f"mapping to {_type_name(args[1])}" if len(args) == 2 else "mapping"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", str(tp)).replace("Path", "path")


def _bounds(info: FieldInfo) -> str:
    parts: list[str] = []
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    metadata = list(info.metadata)
    annotation = info.annotation
    for arg in get_args(annotation):  # Annotated members of a union
        if get_origin(arg) is Annotated:
            metadata.extend(get_args(arg)[1:])
    if get_origin(annotation) is Annotated:
        metadata.extend(get_args(annotation)[1:])
    flat: list[Any] = []
    for m in metadata:  # a Field(...) inside Annotated carries its own constraints
        flat.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    text = _unwrap(annotation) is str or any(_unwrap(a) is str for a in get_args(annotation))
    for m in flat:
        for attr, sym in symbols.items():
            value = getattr(m, attr, None)
            if value is not None:
                parts.append(f"{sym} {value:,}" if isinstance(value, int) else f"{sym} {value}")
        if getattr(m, "max_length", None) is not None:
            parts.append(f"at most {m.max_length:,} {'characters' if text else 'items'}")
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return ", ".join(seen)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "see below"
        if isinstance(value, BaseModel):
            dumped = value.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
            return f"`{_compact(dumped)}`" if dumped else "—"
        return f"`{_compact(value)}`"
    if info.default is PydanticUndefined or info.default is None:
        return "unset"
    return f"`{_compact(info.default)}`"


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(", ", ": "), default=str)


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    out: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        path = f"{prefix}{info.alias or name}"
        out.append((path, info))
        sub = _model_of(info.annotation)
        if sub is not None and not path.startswith("space."):
            out.extend(_fields(sub, path + "."))
    return out


def _note(path: str) -> str | None:
    if path in NOTES:
        return NOTES[path]
    if path.startswith("diagnosis."):
        return DIAGNOSIS_NOTE
    return None


def missing_notes() -> list[str]:
    """Fields of the sweep file that :data:`NOTES` does not document."""
    missing = [p for p, _ in _fields(SweepSpec) if _note(p) is None]
    for p, info in _fields(SweepSpec):
        if p.startswith("space."):
            sub = _model_of(info.annotation)
            if sub is not None:
                missing += [f"{p}.{k}" for k in sub.model_fields if k not in PARAM_NOTES]
    return missing


def _row(path: str, info: FieldInfo) -> str:
    cells = [
        f"`{path}`",
        _type_name(info.annotation),
        _default(info),
        _bounds(info),
        (_note(path) or "").replace("|", "\\|"),
    ]
    return "| " + " | ".join(cells) + " |"


def render() -> str:
    lines = [
        "# Sweep-file reference",
        "",
        "<!-- generated by `python -m orchestrator.config.reference > docs/sweep-file.md`;"
        " tests/test_docs.py fails when it is stale -->",
        "",
        "A sweep file is YAML (at most 1 MiB, no duplicate keys, strict types: `true` is not a "
        'number and `"3"` not an integer). Unknown fields are errors that name the likely '
        "one. Paths are relative to the sweep file.",
        "",
        "| field | type | default | bounds | meaning |",
        "|---|---|---|---|---|",
    ]
    params: dict[str, type[BaseModel]] = {}
    for path, info in _fields(SweepSpec):
        lines.append(_row(path, info))
        if path.startswith("space."):
            sub = _model_of(info.annotation)
            if sub is not None:
                params[sub.__name__] = sub
    lines += [
        "",
        "## Search-space parameters",
        "",
        "Each `space.*` entry is a fixed value (`3`), a list of choices (`[2, 3]`) or a "
        "mapping with these fields (give `value`, `choices` or a range):",
        "",
    ]
    for name, model in sorted(params.items()):
        lines += [f"### {name}", "", "| field | type | bounds | meaning |", "|---|---|---|---|"]
        for key, info in model.model_fields.items():
            lines.append(
                f"| `{key}` | {_type_name(info.annotation)} | {_bounds(info)} | "
                f"{PARAM_NOTES.get(key, '')} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
