"""The inference recipe of a trained model: how to call it the way it was trained.

A fine-tuned model answers well only when it is prompted as its training data was: a
prompt/completion model needs the separator that ended every training prompt, and its
completion ends at the stop sequence that ended every training completion (the local trainer
also appends the tokenizer's end-of-sequence token, which the model learns to emit). These
conventions are what :mod:`orchestrator.data.conventions` detects in the training file; the
recipe carries them, with the model to call and a sample call for the backend's SDK
(:meth:`Recipe.sample_call`): ``openai`` (``OpenAI``), ``azure`` (``OpenAI`` on the Azure v1
surface, with the deployment of the fine-tuned model) or ``transformers`` ``generate`` for
the local trainer's model folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Recipe",
    "build_recipe",
    "missing_model_note",
    "recipe_of_trial",
    "request_of_trial",
    "with_model",
]

#: new tokens the local sample call allows (a completion normally stops well before)
MAX_NEW_TOKENS = 64
#: the end of a turn in ChatML templates (the built-in models' and SmolLM2's)
_END_OF_TURN = "<|im_end|>"


@dataclass(frozen=True)
class Recipe:
    """How to call a fine-tuned model as it was trained."""

    backend: str
    #: the fine-tuned model id (openai/azure) or the model folder (local)
    model: str
    #: the model the fine-tuning started from
    base_model: str
    #: ``chat`` or ``prompt_completion``
    format: str
    #: what every training prompt ends with (append it to prompts); None for chat
    separator: str | None = None
    #: where a completion ends: the training data's stop sequence, then (local) the EOS token
    stop: tuple[str, ...] = ()
    #: the system message every training conversation starts with, if they share one
    system: str | None = None
    #: a prompt (without separator) or a user message from the data, for the sample call
    example: str = "Hello"
    #: the base model folder when ``model`` is a LoRA adapter (local)
    adapter_base: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def api(self) -> str:
        """What the sample call uses: ``transformers``, ``chat.completions`` or ``completions``."""
        if self.backend == "local":
            return "transformers"
        return "chat.completions" if self.format == "chat" else "completions"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["notes"] = list(self.notes)
        data["api"] = self.api
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["stop"] = tuple(values.get("stop") or ())
        values["notes"] = tuple(values.get("notes") or ())
        return cls(**values)

    def prompt_text(self, prompt: str) -> str:
        """``prompt`` as the model was trained on it: ending with the separator."""
        if self.separator and not prompt.endswith(self.separator):
            return prompt + self.separator
        return prompt

    def sample_call(self) -> str:
        """Python code to paste: one call of the model with this recipe, printing the answer."""
        if self.backend == "local":
            return _local_call(self)
        return _provider_call(self)


def _local_call(r: Recipe) -> str:
    load = [
        "import json",
        "",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
    ]
    if r.adapter_base:
        load += [
            "from peft import PeftModel",
            "",
            f"base = {r.adapter_base!r}",
            f"adapter = {r.model!r}",
            "tokenizer = AutoTokenizer.from_pretrained(adapter, local_files_only=True)",
            "model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)",
            "model = PeftModel.from_pretrained(model, adapter, local_files_only=True)",
        ]
    else:
        load += [
            f"path = {r.model!r}",
            "tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)",
            "model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)",
        ]
    if r.format == "chat":
        messages = _messages(r)
        build = [
            f"messages = {messages!r}",
            "ids = tokenizer.apply_chat_template(",
            "    messages, add_generation_prompt=True, return_tensors='pt', return_dict=True",
            ")",
            "inputs = {k: v for k, v in ids.items() if k in ('input_ids', 'attention_mask')}",
        ]
    else:
        build = [
            f"prompt = {r.example!r} + {r.separator or ''!r}  # the separator ends every prompt",
            "inputs = tokenizer(prompt, return_tensors='pt')",
        ]
    stop = list(r.stop)
    gen = [
        f"stop = {stop!r}  # as in the training data; the trainer ended every example with EOS",
        "output = model.generate(",
        "    **inputs,",
        f"    max_new_tokens={MAX_NEW_TOKENS},",
        "    do_sample=False,",
        "    eos_token_id=tokenizer.eos_token_id,",
        "    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,",
        "    stop_strings=stop,",
        "    tokenizer=tokenizer,",
        ")",
        "text = tokenizer.decode(output[0, inputs['input_ids'].shape[1] :])",
        "ends = [text.index(s) for s in stop if s in text]",
        "completion = text[: min(ends)] if ends else text",
        "finish_reason = 'stop' if ends else 'length'",
        "print(json.dumps({'completion': completion, 'finish_reason': finish_reason}))",
    ]
    return "\n".join([*load, *build, *gen]) + "\n"


def _messages(r: Recipe) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": r.system}] if r.system else []
    return [*messages, {"role": "user", "content": r.example}]


def _provider_call(r: Recipe) -> str:
    if r.backend == "azure":
        from orchestrator.backends.remote.providers import AZURE_API_VERSION

        head = [
            "import os",
            "",
            "from openai import AzureOpenAI",
            "",
            "# AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY from the environment",
            f"version = os.environ.get('OPENAI_API_VERSION', {AZURE_API_VERSION!r})",
            "client = AzureOpenAI(api_version=version)",
            "# deploy the fine-tuned model first: `model` is that deployment's name",
            f"model = os.environ.get('AZURE_OPENAI_DEPLOYMENT', {r.model!r})",
        ]
    else:
        head = [
            "from openai import OpenAI",
            "",
            "client = OpenAI()  # OPENAI_API_KEY (and OPENAI_BASE_URL) from the environment",
            f"model = {r.model!r}",
        ]
    if r.format == "chat":
        call = [
            "response = client.chat.completions.create(",
            "    model=model,",
            f"    messages={_messages(r)!r},",
            "    temperature=0,",
            ")",
            "print(response.choices[0].message.content)",
        ]
    else:
        stop = list(r.stop) or None
        call = [
            "response = client.completions.create(",
            "    model=model,",
            f"    prompt={r.example!r} + {r.separator or ''!r},  # the separator ends every prompt",
            f"    stop={stop!r},  # the stop sequence ends every training completion",
            "    max_tokens=256,",
            "    temperature=0,",
            ")",
            "print(response.choices[0].text)",
        ]
    return "\n".join([*head, *call]) + "\n"


def _first_example(path: Path, fmt: str, separator: str | None) -> tuple[str, str | None]:
    """A prompt (without its separator) or the first user message, and the shared system
    message of chat data (None when the conversations differ in it)."""
    example, system, systems = "Hello", None, set()
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 1000:
                break
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            if fmt == "chat" and isinstance(value.get("messages"), list):
                msgs = [m for m in value["messages"] if isinstance(m, dict)]
                first = msgs[0] if msgs else {}
                systems.add(first.get("content") if first.get("role") == "system" else None)
                users = [m for m in msgs if m.get("role") == "user"]
                if i == 0 and users and isinstance(users[0].get("content"), str):
                    example = users[0]["content"]
            elif i == 0 and isinstance(value.get("prompt"), str):
                example = value["prompt"]
                if separator and example.endswith(separator):
                    example = example[: -len(separator)]
    if len(systems) == 1:
        only = systems.pop()
        system = only if isinstance(only, str) else None
    return example, system


def _eos_and_adapter(model_dir: Path) -> tuple[str | None, str | None]:
    """The tokenizer's EOS token of a local model folder, and the base model of an adapter."""
    eos = None
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        token = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
        if isinstance(token, dict):
            token = token.get("content")
        eos = token if isinstance(token, str) else None
    base = None
    adapter = model_dir / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
    return eos, base


def build_recipe(backend: str, model: str, base_model: str, train_file: Path | None) -> Recipe:
    """The recipe of ``model`` (fine-tuned from ``base_model`` on ``train_file``), with the
    separator and stop sequence the data checks find in the training file. A training file
    that is gone leaves them unknown (said in ``notes``)."""
    from orchestrator.data.checks import check_file

    notes: list[str] = []
    fmt, separator, stop = "chat", None, None
    example, system = "Hello", None
    if train_file is not None and train_file.is_file():
        stats, _, _ = check_file(train_file)
        fmt, separator, stop = stats.format, stats.separator, stats.stop_sequence
        example, system = _first_example(train_file, fmt, separator)
        if stats.task == "classification" and stats.labels:
            shown = ", ".join(repr(label) for label in list(stats.labels)[:6])
            more = ", ..." if len(stats.labels) > 6 else ""
            notes.append(
                f"classification: the answer is one of {len(stats.labels)} labels "
                f"({shown}{more}); compare it with them, a few tokens are enough"
            )
    else:
        notes.append(
            f"the training file {train_file} is gone: its separator and stop sequence are unknown"
        )
    stops = [stop] if stop else []
    adapter_base = None
    if backend == "local":
        eos, adapter_base = _eos_and_adapter(Path(model))
        template = Path(model) / "chat_template.jinja"
        if fmt == "chat" and template.is_file() and _END_OF_TURN in template.read_text("utf-8"):
            stops.append(_END_OF_TURN)  # an assistant turn ends with it, then the template's
        if eos and eos not in stops:
            stops.append(eos)
    if fmt == "chat":
        separator = None
    return Recipe(
        backend=backend,
        model=model,
        base_model=base_model,
        format=fmt if fmt in ("chat", "prompt_completion") else "chat",
        separator=separator,
        stop=tuple(stops),
        system=system,
        example=example,
        adapter_base=adapter_base,
        notes=tuple(notes),
    )


def request_of_trial(trial: Any, study: Any = None) -> Any:
    """The :class:`~orchestrator.backends.base.TrainingRequest` of ``trial``'s job: its own,
    or for an earlier epoch told as a trial (``engine/fidelity.py``) its parent's, read from
    ``study`` (None when neither is recorded)."""
    from orchestrator.backends.base import TrainingRequest
    from orchestrator.core.attrs import TrialAttrs

    text = trial.user_attrs.get(TrialAttrs.REQUEST)
    parent = trial.user_attrs.get(TrialAttrs.DERIVED_FROM)
    if not text and parent is not None and study is not None:
        trials = study.get_trials(deepcopy=False)
        if isinstance(parent, int) and 0 <= parent < len(trials):
            text = trials[parent].user_attrs.get(TrialAttrs.REQUEST)
    return TrainingRequest.from_json(text) if text else None


def missing_model_note(trial: Any) -> str | None:
    """How to get the model of ``trial`` when it kept none (None: it has one, or it is not
    an earlier epoch of another trial's job)."""
    from orchestrator.core.attrs import TrialAttrs

    parent = trial.user_attrs.get(TrialAttrs.DERIVED_FROM)
    if trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL) or parent is None:
        return None
    epochs = trial.params.get("n_epochs")
    job = trial.user_attrs.get(TrialAttrs.DERIVED_JOB)
    of_job = f" (job {job})" if job else ""
    return (
        f"trial {trial.number} is epoch {epochs} of trial {parent}'s job{of_job}, which kept no "
        f"model at that epoch: train its settings with n_epochs={epochs} (add them to the sweep "
        "file's enqueue: and run it again) to get one; the recipe is of the best trial that has "
        "a model"
    )


def with_model(study: Any, trial: Any) -> Any:
    """``trial`` when it has a model, else the study's best completed trial that has one
    (``trial`` again when none has): whose recipe ``best`` shows and the registry holds."""
    from orchestrator.core.attrs import TrialAttrs

    if trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL):
        return trial
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    kept = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and t.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL)
    ]
    return min(kept, key=lambda t: (sign * float(t.value or 0.0), t.number), default=trial)


def recipe_of_trial(backend: str, trial: Any, study: Any = None) -> Recipe | None:
    """The recipe of an Optuna trial's fine-tuned model (None when it made none). An earlier
    epoch told as a trial takes its base model and data from its parent in ``study``."""
    from orchestrator.core.attrs import TrialAttrs

    model = trial.user_attrs.get(TrialAttrs.FINE_TUNED_MODEL)
    if not model:
        return None
    request = request_of_trial(trial, study)
    base = request.model if request is not None else ""
    train = Path(request.train_file) if request is not None else None
    return build_recipe(backend, str(model), base, train)
