"""Regenerate the real-curve corpus: the local ``tiny`` model trained on the shipped tasks.

Each entry of :data:`RUNS` is one real training job (the built-in random 2-layer ``tiny``
model, byte tokenizer, CPU, one torch thread, seed 0 unless the run sets one) on a task
written by :func:`orchestrator.backends.local.tasks.write_task`; its metric points are saved as an
OpenAI-layout result CSV in ``tests/diagnosis/corpus/NAME.csv``. The label of each curve is
not computed here: it was assigned by reading the curve and is recorded, with the reason, in
``tests/diagnosis/corpus/MANIFEST`` (the tests check ``ftsweep diagnose`` against it).

Usage (seconds to a minute per run on one core)::

    nice python tests/diagnosis/make_corpus.py            # every run
    nice python tests/diagnosis/make_corpus.py NAME ...   # some of them
    python tests/diagnosis/make_corpus.py --list          # names and settings

``no_train_acc`` runs keep the train-accuracy column empty, as some result files have it:
the diagnosis must then read the validation token accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Run:
    task: str
    n_train: int
    n_epochs: int
    batch_size: int
    lrm: float
    n_valid: int = 40
    no_train_acc: bool = False
    seed: int = 0

    def describe(self) -> str:
        extra = ", train_accuracy column dropped" if self.no_train_acc else ""
        return (
            f"task={self.task} n_train={self.n_train} n_valid={self.n_valid} "
            f"n_epochs={self.n_epochs} batch_size={self.batch_size} "
            f"learning_rate_multiplier={self.lrm:g} prompt_loss_weight=0.1 seed={self.seed}{extra}"
        )


RUNS: dict[str, Run] = {
    "reverse-lr1-e1-b8": Run("reverse", 400, 1, 8, 1.0),
    "reverse-lr0.3-e3-b8": Run("reverse", 160, 3, 8, 0.3),
    "reverse-lr1-e4-b8": Run("reverse", 160, 4, 8, 1.0),
    "reverse-lr1-e8-b4": Run("reverse", 160, 8, 4, 1.0),
    "reverse-lr3-e8-b16": Run("reverse", 160, 8, 16, 3.0),
    "reverse-lr3-e40-b8": Run("reverse", 160, 40, 8, 3.0),
    "reverse-lr30-e4-b8": Run("reverse", 160, 4, 8, 30.0),
    "reverse-lr0.02-e2-b16": Run("reverse", 160, 2, 16, 0.02),
    "reverse-lr0.02-e2-b16-noacc": Run("reverse", 160, 2, 16, 0.02, no_train_acc=True),
    "reverse-lr3-e40-b8-noacc": Run("reverse", 160, 40, 8, 3.0, no_train_acc=True),
    "reverse-lr3-e20-b8": Run("reverse", 160, 20, 8, 3.0),
    "reverse-lr5-e30-b8": Run("reverse", 160, 30, 8, 5.0),
    "reverse-lr300-e4-b8": Run("reverse", 160, 4, 8, 300.0),
    "random-lr3-e24-b8": Run("random_labels", 160, 24, 8, 3.0),
    "random-lr1-e3-b8": Run("random_labels", 160, 3, 8, 1.0),
    "tickets-lr3-e6-b8": Run("tickets", 160, 6, 8, 3.0),
    "tickets-lr3-e6-b8-noacc": Run("tickets", 160, 6, 8, 3.0, no_train_acc=True),
    "tickets-lr3-e12-b8": Run("tickets", 160, 12, 8, 3.0),
    "tickets-lr1-e10-b16": Run("tickets", 160, 10, 16, 1.0),
    "reverse-lr1-e4-b8-noacc": Run("reverse", 160, 4, 8, 1.0, no_train_acc=True),
    # held out: made and labelled after the rules were fixed, to check them on new curves
    "holdout-reverse-lr2-e12-b8-s1": Run("reverse", 160, 12, 8, 2.0, seed=1),
    "holdout-random-lr5-e16-b4-s1": Run("random_labels", 160, 16, 4, 5.0, seed=1),
    "holdout-tickets-lr0.5-e4-b8-s1": Run("tickets", 160, 4, 8, 0.5, seed=1),
    "holdout-reverse-lr100-e3-b8-s1": Run("reverse", 160, 3, 8, 100.0, seed=1),
    "holdout-tickets-lr5-e20-b8-s1": Run("tickets", 160, 20, 8, 5.0, seed=1),
    # plateaus: few examples, so validation loss levels off while training loss keeps
    # falling; the same settings at several epoch counts, the longest one the reference
    # for whether more epochs help (docs/diagnosis.md, "Plateaus")
    "reverse-n40-lr3-e6-b8": Run("reverse", 40, 6, 8, 3.0),
    "reverse-n40-lr3-e10-b8": Run("reverse", 40, 10, 8, 3.0),
    "reverse-n40-lr3-e14-b8": Run("reverse", 40, 14, 8, 3.0),
    "reverse-n40-lr3-e20-b8": Run("reverse", 40, 20, 8, 3.0),
    "reverse-n40-lr3-e30-b8": Run("reverse", 40, 30, 8, 3.0),
    "reverse-n80-lr2-e10-b8": Run("reverse", 80, 10, 8, 2.0),
    "reverse-n80-lr2-e16-b8": Run("reverse", 80, 16, 8, 2.0),
    "reverse-n80-lr2-e24-b8": Run("reverse", 80, 24, 8, 2.0),
    "reverse-n80-lr2-e40-b8": Run("reverse", 80, 40, 8, 2.0),
    "reverse-n80-lr5-e12-b8": Run("reverse", 80, 12, 8, 5.0),
    "reverse-n80-lr5-e24-b8": Run("reverse", 80, 24, 8, 5.0),
    # held out: made and labelled after the plateau rule was fixed
    "holdout-reverse-n40-lr2-e12-b4-s1": Run("reverse", 40, 12, 4, 2.0, seed=1),
    "holdout-reverse-n40-lr2-e24-b4-s1": Run("reverse", 40, 24, 4, 2.0, seed=1),
    "holdout-reverse-n60-lr4-e10-b8-s2": Run("reverse", 60, 10, 8, 4.0, seed=2),
    "holdout-reverse-n60-lr4-e20-b8-s2": Run("reverse", 60, 20, 8, 4.0, seed=2),
    "holdout-reverse-n60-lr4-e30-b8-s2": Run("reverse", 60, 30, 8, 4.0, seed=2),
    "holdout-reverse-n120-lr3-e12-b8-s1": Run("reverse", 120, 12, 8, 3.0, seed=1),
    "holdout-reverse-n120-lr3-e24-b8-s1": Run("reverse", 120, 24, 8, 3.0, seed=1),
    "holdout-reverse-n40-lr3-e14-b8-s1": Run("reverse", 40, 14, 8, 3.0, seed=1),
    "holdout-reverse-n40-lr3-e28-b8-s1": Run("reverse", 40, 28, 8, 3.0, seed=1),
    "holdout-reverse-n50-lr2-e16-b4-s2": Run("reverse", 50, 16, 4, 2.0, seed=2),
    "holdout-reverse-n50-lr2-e32-b4-s2": Run("reverse", 50, 32, 4, 2.0, seed=2),
}


def make(name: str, run: Run, work: Path) -> Path:
    from orchestrator.backends.base import Hyperparameters, TrainingRequest
    from orchestrator.backends.local import LocalBackend, LocalOptions
    from orchestrator.backends.local.tasks import write_task
    from orchestrator.backends.remote.resultfile import write_result_csv
    from orchestrator.testing import poll_until

    train, valid = write_task(
        run.task, work / name, n_train=run.n_train, n_valid=run.n_valid, seed=run.seed
    )
    # valid_every: about 20 sampled valid_loss points a run, as the trainer's default was
    # when the corpus was made (it now also spaces them by the validation sample's size)
    steps = math.ceil(run.n_train / run.batch_size) * run.n_epochs
    every = math.ceil(steps / 20)
    options = LocalOptions(torch_threads=1, save_model=False, valid_every=every)
    backend = LocalBackend(work / "jobs", options)
    hp = Hyperparameters(run.n_epochs, run.batch_size, run.lrm, 0.1)
    request = TrainingRequest.make(
        study="corpus", trial=0, model="tiny", hyperparameters=hp,
        train_file=train, valid_file=valid, seed=run.seed,
    )  # fmt: skip
    polled = poll_until(backend, backend.submit(request), timeout_s=600, interval_s=0.5)
    if polled.last.status.value != "succeeded":
        raise SystemExit(f"{name}: job {polled.last.status.value}: {polled.last.error}")
    curves: dict[str, list[tuple[int, float]]] = {}
    for p in polled.points:
        curves.setdefault(p.name, []).append((p.step, p.value))
    if run.no_train_acc:
        curves.pop("train_mean_token_accuracy", None)
    return write_result_csv(curves, CORPUS / f"{name}.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="runs to make (default: all)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, run in RUNS.items():
            print(f"{name}\t{run.describe()}")
        return
    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="ftsweep-corpus-") as tmp:
        for name in args.names or list(RUNS):
            started = time.monotonic()
            path = make(name, RUNS[name], Path(tmp))
            print(f"{path.relative_to(ROOT)}\t{time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
