"""Names of the user attributes ftsweep keeps on Optuna trials and studies.

They are the write-ahead ledger (what a trial's job is, so any process can re-attach), the
trial's outcome (diagnosis, cost, model) and the links to MLflow. Every name starts with
``ftsweep.``. This module imports nothing, so the engine, the report and the CLI can share it.
"""

from __future__ import annotations

__all__ = ["StudyAttrs", "TrialAttrs"]


class TrialAttrs:
    """Trial user-attribute names."""

    # the ledger, written before and while the job runs
    REQUEST = "ftsweep.request"  # the TrainingRequest as JSON (TrainingRequest.to_json)
    KEY = "ftsweep.key"  # its idempotency key
    CONFIG_HASH = "ftsweep.config_hash"  # what makes two trials the same training
    BACKEND = "ftsweep.backend"
    JOB_ID = "ftsweep.job_id"
    WORKER = "ftsweep.worker"  # host:pid of the process that owns the trial
    HEARTBEAT = "ftsweep.heartbeat"  # wall-clock time of the owner's last sign of life
    SAME_AS = "ftsweep.same_as"  # waiting for this running trial with the same configuration
    PRUNED_AT = "ftsweep.pruned_at"  # the epoch at which the pruner stopped it (before cancel)
    ESTIMATE = "ftsweep.cost_estimate_usd"
    BATCH_PCT = "ftsweep.batch_size_pct"
    EPOCHS_DONE = "ftsweep.epochs_done"
    MLFLOW_RUN = "ftsweep.mlflow_run_id"
    # the outcome, written when the job has ended
    COST = "ftsweep.cost_usd"
    DIAGNOSIS = "ftsweep.diagnosis"
    RECOMMENDATION = "ftsweep.recommendation"
    BEST_EPOCH = "ftsweep.best_epoch"
    ERROR = "ftsweep.error"
    #: failed for reasons of the provider or the machine: not counted, tried again
    ENVIRONMENT_FAILURE = "ftsweep.environment_failure"
    NOT_STARTED = "ftsweep.not_started"  # told FAIL before its job started: not counted
    RETRY_OF = "ftsweep.retry_of"  # an enqueued trial that tries this failed trial again
    WARM_START = "ftsweep.warm_start"  # a retune's enqueued best of the generation before
    REUSED_FROM = "ftsweep.reused_from"
    STEPS = "ftsweep.steps"
    JOB_STATUS = "ftsweep.job_status"
    FINE_TUNED_MODEL = "ftsweep.fine_tuned_model"
    TRAINED_TOKENS = "ftsweep.trained_tokens"
    # the job's tokens_per_second, mfu, peak_memory_mb at its last epoch end (local trainer)
    THROUGHPUT = "ftsweep.throughput"
    CHECKPOINTS = "ftsweep.checkpoints"
    BEST_CHECKPOINT = "ftsweep.best_checkpoint"
    # an earlier epoch of another trial's job, told as a trial of its own (engine/fidelity.py)
    DERIVED_FROM = "ftsweep.derived_from"  # the number of the trial whose job it comes from
    DERIVED_JOB = "ftsweep.derived_job"  # that trial's job id
    DERIVED_MODEL = "ftsweep.derived_model"  # the checkpoint at that epoch (model id or path)
    # a provider's past job, imported by `ftsweep import` (workflows/importer)
    IMPORTED = "ftsweep.imported_job"  # the provider's job id: the import's key
    IMPORTED_SAME_DATA = "ftsweep.imported_same_data"  # trained on the sweep's training file
    IMPORTED_EXAMPLES = "ftsweep.imported_n_examples"  # examples in its training file
    # several objectives (docs/search.md)
    OBJECTIVES = "ftsweep.objectives"  # {metric: value} of every objective, as told
    CONSTRAINTS = "ftsweep.constraints"  # violations (<= 0: inside), what constraints_func reads
    DURATION = "ftsweep.duration_s"  # the job's wall time, paused time left out
    #: {epoch: primary objective} where Optuna takes no intermediate values (several
    #: objectives: its multi-objective samplers refuse trials that have them)
    EPOCH_VALUES = "ftsweep.epoch_values"


class StudyAttrs:
    """Study user-attribute names."""

    MLFLOW_PARENT_RUN = "ftsweep.mlflow_parent_run_id"
    MLFLOW_EXPERIMENT = "ftsweep.mlflow_experiment_id"
    REGISTERED_TRIAL = "ftsweep.registered_trial"
    REGISTERED_VERSION = "ftsweep.registered_version"
    #: what the results depend on (orchestrator.plan.fingerprint.Fingerprint as JSON)
    FINGERPRINT = "ftsweep.fingerprint"
    # the lineage of ``ftsweep retune``: one study per generation
    LINEAGE = "ftsweep.lineage"  # the sweep's name (the first generation's study)
    GENERATION = "ftsweep.generation"  # 1, 2, ...
    PREVIOUS_STUDY = "ftsweep.previous_study"
    CHANGES = "ftsweep.changes"  # what changed since the previous generation (list)
    SPACE = "ftsweep.space"  # the search space this generation ran (the sweep file's form)
    FILE_SPACE = "ftsweep.file_space"  # the space as the sweep file said then
    #: the sweep ran to its limits with a completed trial: {at, completed, best_trial, ...}
    CONCLUDED = "ftsweep.concluded"
    #: the ``at`` of the conclusion MLflow has in full (the parent run ended, the report and
    #: the best model logged): a re-run of a sweep with both equal has nothing to do
    LOGGED = "ftsweep.mlflow_logged"
    #: ``ftsweep.sampler_seed.<host:pid>``: the seed each worker's sampler was built with
    SAMPLER_SEED = "ftsweep.sampler_seed"
    #: ``ftsweep import``'s study (``NAME.imported``): the provider its jobs came from
    IMPORTED_FROM = "ftsweep.imported_from"
