"""Azure OpenAI fine-tuning: the v1 surface (default) or the dated ``api-version`` one, training
tiers, the models Azure trains, and Azure's refusals in one line each.

* **Surfaces.** ``v1`` (default): ``https://RESOURCE.openai.azure.com/openai/v1/`` with the
  ``OpenAI`` client and the ``api-key`` header (from the reference notes (docs); set through
  the SDK's public ``default_headers``, see :func:`key_client`). ``dated``:
  ``AzureOpenAI(api_version=...)`` (default version 2024-10-21). Chosen by
  ``backend.options.surface``, else ``AZURE_OPENAI_SURFACE``, else ``dated`` when
  ``backend.options.api_version`` is given, else ``v1``. Both behave the same: idempotent
  submit (a suffix derived from the key plus a local ledger), re-attach, events, checkpoints,
  result files, cancel.
* **Request.** ``method: {type: supervised, supervised: {hyperparameters}}`` on v1 and on
  dated versions after 2024-10-21 (a guess: the 2024-10-21 schema has no ``method``, from the
  reference notes (docs)); top-level ``hyperparameters`` on 2024-10-21 and earlier.
  ``trainingType`` is a top-level body field (the docs' SDK examples send it through
  ``extra_body``; from the reference notes (docs), spellings marked "verify").
* **Tiers.** ``training_type: standard | global | datazone | developer`` (default ``global``)
  is sent as ``Standard`` / ``GlobalStandard`` / ``datazone_wire_value`` (default
  ``DataZoneStandard``, a guess: Microsoft documents no value) / ``developerTier`` and sets
  the price used by estimates, budgets and reconciled costs (:mod:`orchestrator.catalog.prices`).
  A tier the model does not train in is refused at plan time (exit 2) naming the tiers it
  does. A Developer job that the provider pauses is reported as paused (running,
  ``JobUpdate.paused``), never as a failure.
* **Who may train what.** The OpenAI models (gpt-4o, gpt-4o-mini, the gpt-4.1 family) train
  for existing customers only, until about April 2027: a sweep on one warns at plan time
  (:meth:`AzureOpenAIBackend.notices`), and Azure's refusal of a new customer is one line
  naming the open-weight models that stay open.
* **Credentials** come from the environment only: ``AZURE_OPENAI_ENDPOINT`` and
  ``AZURE_OPENAI_API_KEY``, or Microsoft Entra ID (``auth: entra``, or no key set) through
  ``azure-identity`` (``pip install 'ftsweep[azure]'``) or an injected ``token_provider``.
  A token provider is asked on every request, so an expired token is replaced; a refused
  Entra request is tried once more with a fresh token. A key does not refresh: its 401 says so.
* **Quotas** (docs): 3 running training jobs per resource on Standard and Global, 5 on
  Developer (``capabilities.max_concurrent_jobs``, per instance: the engine keeps at most
  that many in flight across all the study's workers, counted in the study under its launch
  lock, and queues the rest itself rather than in Azure's queue of 20, so each trial is asked
  of the sampler as late as possible); 100 jobs in all (a refusal naming the fix); files of at
  most 512 MB, 1 GB together (checked before the upload); a job at most 2 billion tokens x
  epochs (checked at plan time for the space's dearest configuration).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from orchestrator.backends.base import BackendOptions, Capabilities, TrainingRequest
from orchestrator.backends.remote.backend import REMOTE_CAPABILITIES, RemoteBackend, RemoteOptions
from orchestrator.backends.remote.retry import Provider
from orchestrator.catalog.azure import (
    AZURE_MODELS,
    DATAZONE_WIRE_VALUE,
    DEFAULT_TIER,
    MAX_FILE_BYTES,
    MAX_FILES_BYTES,
    MAX_JOB_TOKENS,
    TIERS,
    azure_model,
    max_running,
)
from orchestrator.catalog.models import AZURE_TIER_LABELS, open_weight_models
from orchestrator.catalog.prices import training_price
from orchestrator.core.errors import (
    BackendError,
    DataError,
    ProviderAuthError,
    ProviderBusyError,
    ProviderRefusedError,
    UnknownModelError,
    UsageError,
)

if TYPE_CHECKING:
    from orchestrator.backends.base import Hyperparameters, JobHandle
    from orchestrator.catalog.tokens import ExampleCounter
    from orchestrator.data.findings import DatasetStats

__all__ = [
    "AZURE_API_VERSION",
    "AzureOpenAIBackend",
    "AzureOptions",
    "azure_suffix",
    "key_client",
]

AZURE_API_VERSION = "2024-10-21"
SURFACE_ENV = "AZURE_OPENAI_SURFACE"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
EXTRA = "pip install 'ftsweep[azure]'"


class AzureOptions(RemoteOptions):
    """``backend.options`` of ``azure``."""

    #: ``https://RESOURCE.openai.azure.com`` (default: ``AZURE_OPENAI_ENDPOINT``)
    endpoint: str | None = None
    #: ``v1`` (default) or ``dated`` (default: ``AZURE_OPENAI_SURFACE``)
    surface: Literal["v1", "dated"] | None = None
    #: the dated API version (default: ``OPENAI_API_VERSION``, else 2024-10-21); implies dated
    api_version: str | None = None
    #: the training tier: standard (regional), global, datazone (US) or developer
    #: (pre-emptible)
    training_type: Literal["standard", "global", "datazone", "developer"] = DEFAULT_TIER
    #: the ``trainingType`` sent for ``datazone``: Microsoft documents none, this default is
    #: a guess (unverified until a live check; see docs/backends.md)
    datazone_wire_value: str = Field(default=DATAZONE_WIRE_VALUE, min_length=1, max_length=64)
    #: ``key`` (AZURE_OPENAI_API_KEY) or ``entra`` (Entra ID); default: a key when one is set
    auth: Literal["key", "entra"] | None = None
    #: ``ftsweep evaluate``'s deployments go through Azure Resource Manager
    #: (:mod:`.arm`): the subscription (default: ``AZURE_SUBSCRIPTION_ID``), the resource
    #: group (default: ``AZURE_RESOURCE_GROUP``), the account (default: the endpoint's
    #: resource name), ARM's address and the most seconds to wait for a deployment
    subscription_id: str | None = Field(default=None, min_length=1)
    resource_group: str | None = Field(default=None, min_length=1, max_length=90)
    account: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,63}$")
    management_endpoint: str = "https://management.azure.com"
    deployment_wait: float = Field(default=1800.0, gt=0, allow_inf_nan=False)


def azure_suffix(key: str) -> str:
    """The job suffix that identifies ``key`` on Azure (Azure jobs carry no metadata)."""
    return "fts-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _hyperparameters(request: TrainingRequest) -> dict[str, Any]:
    hp = request.hyperparameters
    return {
        "n_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "learning_rate_multiplier": hp.learning_rate_multiplier,
    }


def key_client(base_url: str, key: str, timeout: float) -> Any:
    """An ``OpenAI`` client for Azure's v1 surface (``base_url``) that sends ``key`` in the
    ``api-key`` header, through the SDK's public options only: ``default_headers``, and an
    HTTP client that drops the header when a redirect leaves the endpoint's origin (as
    ``AzureOpenAI`` does for its own ``api-key``). The SDK sends its ``api_key`` as a bearer
    as well and has no public option to leave that out; Azure's v1 surface takes a key either
    way (Microsoft's v1 samples pass it as ``api_key``), and httpx drops ``Authorization``
    on a redirect to another origin itself."""
    import openai

    origin = _origin(base_url)

    def strip_key_off_origin(request: Any) -> None:
        if _origin(str(request.url)) != origin:
            request.headers.pop("api-key", None)

    http = openai.DefaultHttpxClient(event_hooks={"request": [strip_key_off_origin]})
    return openai.OpenAI(
        api_key=key,
        base_url=base_url,
        default_headers={"api-key": key},
        http_client=http,
        max_retries=0,
        timeout=timeout,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class AzureOpenAIBackend(RemoteBackend):
    """Fine-tuning jobs on Azure OpenAI (see the module docstring): ``AZURE_OPENAI_ENDPOINT``,
    ``AZURE_OPENAI_API_KEY`` or Entra ID; options ``surface``, ``api_version``,
    ``training_type``, ``datazone_wire_value``, ``auth``. 3 jobs run at once per resource (5
    on Developer); ftsweep queues the rest itself."""

    name: ClassVar[str] = "azure"
    #: Global's cap (the default tier); an instance carries its own tier's
    capabilities: ClassVar[Capabilities] = replace(
        REMOTE_CAPABILITIES, max_concurrent_jobs=max_running(DEFAULT_TIER), max_queued=0
    )
    Options: ClassVar[type[BackendOptions]] = AzureOptions
    events_newest_first: ClassVar[bool] = False

    def __init__(self, *, token_provider: Callable[[], str] | None = None, **kwargs: Any) -> None:
        """``token_provider``: an Entra ID bearer-token provider (what
        ``azure.identity.get_bearer_token_provider`` returns), passed to the SDK as
        ``azure_ad_token_provider``; without it Entra ID uses ``DefaultAzureCredential``."""
        super().__init__(**kwargs)
        opts = self.azure_options
        self.endpoint = opts.endpoint
        self.api_version = opts.api_version
        self.tier = opts.training_type
        self.token_provider = token_provider
        self._ledger_lock = threading.Lock()
        # per instance: the engine reads the job cap from the backend it was given
        capped = replace(self.capabilities, max_concurrent_jobs=max_running(self.tier))
        vars(self)["capabilities"] = capped

    @property
    def azure_options(self) -> AzureOptions:
        assert isinstance(self.options, AzureOptions)
        return self.options

    # -- surface, version, credentials -----------------------------------------------------
    @property
    def surface(self) -> str:
        chosen = self.azure_options.surface or os.environ.get(SURFACE_ENV) or None
        if chosen is None:
            return "dated" if self.api_version else "v1"
        if chosen not in ("v1", "dated"):
            raise UsageError(f"{SURFACE_ENV}={chosen!r}: give v1 or dated")
        return chosen

    @property
    def version(self) -> str:
        """``v1``, or the dated API version in use."""
        if self.surface == "v1":
            return "v1"
        return self.api_version or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION

    @property
    def takes_method(self) -> bool:
        """Does this surface take ``method`` (else top-level ``hyperparameters``)?"""
        return self.version == "v1" or self.version[:10] > AZURE_API_VERSION

    @property
    def _entra(self) -> bool:
        auth = self.azure_options.auth
        if auth is not None:
            return auth == "entra"
        return self.token_provider is not None or not os.environ.get("AZURE_OPENAI_API_KEY")

    def _token_provider(self) -> Callable[[], str]:
        provider = self.token_provider
        if provider is None:
            try:
                identity = importlib.import_module("azure.identity")
            except ImportError as exc:
                why = (
                    "backend.options.auth is entra"
                    if self.azure_options.auth == "entra"
                    else "AZURE_OPENAI_API_KEY is not set"
                )
                raise ProviderAuthError(
                    f"azure: {why}, and Entra ID sign-in needs azure-identity: {EXTRA} "
                    "(or export AZURE_OPENAI_API_KEY)"
                ) from exc
            provider = identity.get_bearer_token_provider(
                identity.DefaultAzureCredential(), ENTRA_SCOPE
            )
        from orchestrator.backends.remote.arm import guarded_token

        return guarded_token(
            provider,
            lambda why: (
                f"azure: Entra ID sign-in failed ({why}): sign in (az login) or "
                "export AZURE_OPENAI_API_KEY"
            ),
        )

    def _make_client(self) -> Any:
        import openai

        endpoint = self._scope()
        if not endpoint:
            raise ProviderAuthError(
                "AZURE_OPENAI_ENDPOINT is not set: export it (or set backend.options.endpoint) "
                "to use the azure backend"
            )
        key = os.environ.get("AZURE_OPENAI_API_KEY")
        if not self._entra and not key:
            raise ProviderAuthError(
                "azure: backend.options.auth is key but AZURE_OPENAI_API_KEY is not set: export it"
            )
        token = self._token_provider() if self._entra else None
        if self.surface == "v1":
            base_url = f"{endpoint}/openai/v1/"
            if token is not None:  # the SDK asks a callable api_key on every request
                return openai.OpenAI(
                    api_key=token, base_url=base_url, max_retries=0, timeout=self.timeout
                )
            assert key is not None
            return key_client(base_url, key, self.timeout)
        common: dict[str, Any] = {
            "azure_endpoint": endpoint,
            "api_version": self.version,
            "max_retries": 0,
            "timeout": self.timeout,
        }
        if token is not None:
            return openai.AzureOpenAI(azure_ad_token_provider=token, **common)
        return openai.AzureOpenAI(api_key=key, **common)

    def _secrets(self) -> list[str]:
        return [os.environ.get("AZURE_OPENAI_API_KEY", "")]

    def _provider(self) -> Provider:
        if self._entra:
            signin = (
                "the Entra ID sign-in (tokens refresh on their own; a refusal means the "
                "identity lacks a Cognitive Services OpenAI role on the resource)"
            )
        else:
            signin = (
                "AZURE_OPENAI_API_KEY (a key does not refresh: export a current key from "
                "the resource's Keys and Endpoint page)"
            )
        return Provider(
            name=self.name,
            credentials=f"{signin} and AZURE_OPENAI_ENDPOINT",
            address_setting="AZURE_OPENAI_ENDPOINT / backend.options.endpoint",
            access="the resource's region and fine-tuning access (AZURE_OPENAI_ENDPOINT)",
            url=self._scope,
        )

    def _scope(self) -> str:
        return str(self.endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")

    def _call(self, what: str, fn: Callable[[], Any], **kw: Any) -> Any:
        try:
            return super()._call(what, fn, **kw)
        except ProviderAuthError as exc:
            if not (self._entra and "HTTP 401" in str(exc)):
                raise
            return super()._call(what, fn, **kw)  # the provider is asked for a fresh token

    def preflight(self) -> None:
        try:
            super().preflight()
        except ProviderAuthError as exc:
            if not (self._entra and "HTTP 401" in str(exc)):
                raise
            super().preflight()  # an expired token: the provider gives a fresh one

    # -- models, tiers, prices --------------------------------------------------------------
    #: the option that picks a tier (read by :func:`.tiers.estimate_tiers`)
    tier_option: ClassVar[str] = "training_type"

    @classmethod
    def tiers_for(cls, model: str) -> tuple[str, ...]:
        """The tiers Azure trains ``model`` in (all three for a model the table lacks)."""
        known = azure_model(model)
        return known.azure_tiers if known is not None else tuple(TIERS)

    @classmethod
    def token_counter(cls, model: str, options: BackendOptions) -> ExampleCounter | None:
        """Exact o200k counts for the OpenAI models; a labelled estimate for the open-weight
        ones (and for a model the table does not know, accepted when it has a price)."""
        from orchestrator.catalog.tokens import OpenAIExampleCounter, openai_counter

        assert isinstance(options, AzureOptions)
        known = azure_model(model)
        if known is None:
            if training_price(model, options.prices, provider="azure", tier=options.training_type):
                counter = OpenAIExampleCounter("gpt-4o")
                counter.name = "o200k_base (an estimate: unknown model)"
                return counter
            raise UnknownModelError(
                f"azure does not fine-tune {model!r}; known: {', '.join(AZURE_MODELS)} "
                "(or give its price: backend.options.prices)"
            )
        if options.training_type not in known.azure_tiers:
            raise UnknownModelError(
                f"azure trains {known.name} only in the {known.tier_labels} tiers, not "
                f"{AZURE_TIER_LABELS[options.training_type]}: set backend.options.training_type "
                f"to {' or '.join(known.azure_tiers)}"
            )
        if known.exact_tokens:
            return openai_counter(model if model.startswith(known.name) else known.name)
        counter = OpenAIExampleCounter("gpt-4o")
        counter.name = f"o200k_base (an estimate for {known.name})"
        assert known.context is not None  # a row Azure trains has one (ModelFacts checks)
        counter.max_tokens_per_example = known.context
        return counter

    @classmethod
    def check_resources(
        cls, model: str, options: BackendOptions, dearest: Hyperparameters, train: DatasetStats
    ) -> tuple[tuple[str, str], ...]:
        """Azure's per-job and per-file quotas for the space's dearest configuration: a job
        trains at most 2 billion tokens x epochs; a file is at most 512 MB."""
        if train.n_bytes > MAX_FILE_BYTES:
            raise UsageError(
                f"{train.path}: {train.n_bytes / 2**20:,.0f} MB, over Azure's 512 MB per file: "
                "split the data or sample it down"
            )
        rows = [("Azure quota", f"{max_running(_tier(options))} running jobs per resource")]
        if train.tokens is None:
            return tuple(rows)
        trained = train.billed_tokens * dearest.n_epochs
        if trained > MAX_JOB_TOKENS:
            raise UsageError(
                f"a job of {dearest.n_epochs} epochs over {train.billed_tokens:,} tokens trains "
                f"{trained:,} tokens, over Azure's 2,000,000,000 per job: lower space.n_epochs "
                "or the data"
            )
        return (*rows, ("trained tokens per job (dearest)", f"{trained:,} of 2,000,000,000"))

    @classmethod
    def notices(cls, model: str, options: BackendOptions) -> list[str]:
        """What a plan on ``model`` should know before it starts (one line each): an OpenAI
        model trains on Azure for existing customers only, and until when."""
        known = azure_model(model)
        if known is None or not known.azure_existing_only:
            return []
        until = known.azure_existing_until
        return [
            f"azure trains {known.name} for existing customers only"
            + (f" (until about {until.isoformat()})" if until else "")
            + "; a new customer is refused: the open-weight "
            + ", ".join(open_weight_models())
            + " train for everyone (training_type global or datazone)"
        ]

    def check(self, request: TrainingRequest) -> None:
        """The remote checks, then Azure's file quotas (512 MB each, 1 GB together), before
        anything is uploaded."""
        super().check(request)
        total = 0
        for path in (request.train_file, request.valid_file):
            if path is None:
                continue
            size = Path(path).stat().st_size
            total += size
            if size > MAX_FILE_BYTES:
                raise DataError(str(path), "over Azure's 512 MB per file")
        if total > MAX_FILES_BYTES:
            raise DataError(
                str(request.train_file), "with the validation file over Azure's 1 GB of files"
            )

    @property
    def wire_tier(self) -> str:
        """The ``trainingType`` this backend sends."""
        if self.tier == "datazone":
            return self.azure_options.datazone_wire_value
        return TIERS[self.tier]

    def price(self, model: str) -> float | None:
        """USD per 1M trained tokens for ``model`` in this backend's tier."""
        return training_price(model, self.prices, provider="azure", tier=self.tier)

    # -- requests ----------------------------------------------------------------------------
    def _create_params(
        self, request: TrainingRequest, train_id: str, valid_id: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "training_file": train_id,
            "seed": request.seed,
            "suffix": azure_suffix(request.key),
            "extra_body": {"trainingType": self.wire_tier},
        }
        hp = _hyperparameters(request)
        if self.takes_method:
            params["method"] = {"type": "supervised", "supervised": {"hyperparameters": hp}}
        else:
            params["hyperparameters"] = hp
        if valid_id is not None:
            params["validation_file"] = valid_id
        return params

    def submit(self, request: TrainingRequest) -> JobHandle:
        try:
            return super().submit(request)
        except (ProviderBusyError, ProviderAuthError):
            raise
        except BackendError as exc:
            refused = self._refusal(str(exc), request.model)
            if refused is None:
                raise
            raise refused from exc

    def _refusal(self, text: str, model: str) -> ProviderRefusedError | None:
        """Azure's refusals of a job, each as its cause and its fix."""
        tier = f"{self.tier} ({self.wire_tier})"
        where = f"surface {self.version}"
        if "does not support fine-tuning" in text:
            return ProviderRefusedError(
                f'azure refused to fine-tune {model} (Azure says: "The specified base model '
                f"does not support fine-tuning.\"): the resource's region does not train "
                f"{model} in tier {tier}, or the API ({where}) did not get the trainingType "
                "it needs; fix: use a region/tier that trains it (backend.options."
                "training_type, docs/backends.md), or the v1 surface"
            )
        if "trainingType" in text and "cannot be fine-tuned" in text:
            return ProviderRefusedError(
                f"azure does not train {model} in tier {tier} in this region ({_said(text)}): "
                "set backend.options.training_type to a supported tier"
            )
        if "existing customers" in text:
            known = azure_model(model)
            until = known.azure_existing_until if known is not None else None
            return ProviderRefusedError(
                f"azure refused to train {model}: Azure trains the OpenAI models for existing "
                "customers only"
                + (f" (until about {until.isoformat()})" if until else "")
                + " and this resource is not one; train an open-weight model instead ("
                + ", ".join(open_weight_models())
                + "; training_type global or datazone) or use the local backend"
            )
        if "quotaExceeded" in text or "quota of" in text:
            return ProviderRefusedError(
                f"azure: the resource's fine-tuning job quota is used up ({_said(text)}): "
                "delete finished jobs (Foundry portal, or DELETE /openai/fine_tuning/jobs/ID) "
                "or use another resource, then run again"
            )
        return None

    # -- the ledger: key -> job id, a shortcut before scanning the job list ------------------
    @property
    def _ledger_path(self) -> Path | None:
        return self.workdir / "azure-jobs.json" if self.workdir is not None else None

    def _ledger(self) -> dict[str, str]:
        path = self._ledger_path
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.get("jobs", {}).items()}

    def _created(self, key: str, job_id: str) -> None:
        path = self._ledger_path
        if path is None:
            return
        with self._ledger_lock:
            jobs = self._ledger()
            entry = f"{self._scope()}|{key}"
            if jobs.get(entry) == job_id:
                return
            jobs[entry] = job_id
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": 1, "jobs": jobs}, indent=1), encoding="utf-8")
            os.replace(tmp, path)

    def _find_job(self, key: str) -> Any | None:
        import openai

        jobs = self.client.fine_tuning.jobs
        suffix = azure_suffix(key)
        known = self._ledger().get(f"{self._scope()}|{key}")
        if known is not None:
            try:
                return self._call("retrieve job", lambda: jobs.retrieve(known))
            except BackendError as exc:
                if not isinstance(exc.__cause__, openai.NotFoundError):
                    raise
        matches = [
            job
            for items in self._pages("list jobs", jobs.list)
            for job in items
            if _suffix_of(job) == suffix
        ]
        return min(matches, key=lambda j: j.created_at) if matches else None


def _tier(options: BackendOptions) -> str:
    return str(getattr(options, "training_type", DEFAULT_TIER))


def _said(text: str) -> str:
    """The provider's words from a BackendError's text (after ``failed: ``), shortened."""
    said = text.split("failed: ", 1)[-1]
    return said[:300]


def _suffix_of(job: Any) -> str | None:
    suffix = getattr(job, "suffix", None) or getattr(job, "user_provided_suffix", None)
    if suffix:
        return str(suffix)
    model = str(getattr(job, "fine_tuned_model", None) or "")
    return "fts-" + model.rsplit("-fts-", 1)[1] if "-fts-" in model else None
