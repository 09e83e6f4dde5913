"""``napari-dlcb tune segmentation|classification|sequence``: hyper-parameter studies.

The paper's model selection: many trials compared on the validation set only,
the chosen model evaluated once on a test set. See :mod:`napari_dlcb.tuning`.
``STUDY_DIR/best/`` is a model folder ``predict`` accepts; ``STUDY_DIR/trials.tsv``
lists every trial. Running again with the same ``--out`` continues the study
(its finished trials are kept); ``--overwrite`` starts a new one there.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path
from typing import Any

from napari_dlcb.commands._args import add_device, int_in
from napari_dlcb.commands._outputs import check_out
from napari_dlcb.commands._report import say
from napari_dlcb.errors import DlcbError

__all__ = ["register"]

STRATEGY_HELP = (
    "line-random: a line search per important hyper-parameter, then random sampling of the "
    "refined space (the paper's protocol; default); tpe: Bayesian optimisation (optuna TPE); "
    "random: random sampling"
)


def register(train, predict, top) -> None:
    """Add ``tune <task>`` to the top-level parser."""
    tune = top.add_parser(
        "tune", help="search hyper-parameters (optuna), locally or on a dask cluster"
    ).add_subparsers(dest="task", metavar="TASK", required=True)
    seg = tune.add_parser("segmentation", help="tune a segmentation U-Net")
    seg.add_argument("--images", required=True, type=Path, help="folder of images")
    seg.add_argument("--labels", required=True, type=Path, help="folder of label images")
    seg.add_argument(
        "--labels-kind", default="scribbles", choices=["scribbles", "classes", "instances"]
    )
    seg.add_argument("--test-images", type=Path, help="held-out images, scored once at the end")
    seg.add_argument("--test-labels", type=Path, help="their dense labels")
    seg.add_argument("--metric", default="accuracy", choices=["accuracy", "mean_iou"])
    seg.set_defaults(func=_run, build=_segmentation)
    cls = tune.add_parser("classification", help="tune a crop classifier (ImageFolder)")
    cls.add_argument("--images", required=True, type=Path, help="ImageFolder: DIR/<class>/*.png")
    cls.add_argument("--val", type=Path, help="explicit validation ImageFolder")
    cls.add_argument("--test", type=Path, help="held-out ImageFolder, scored once at the end")
    cls.set_defaults(func=_run, build=_classification)
    seq = tune.add_parser("sequence", help="tune a DNA model on a sequence table")
    seq.add_argument("--table", required=True, help="TSV/CSV sequence table (gzip ok)")
    seq.add_argument("--test-table", help="held-out table, scored once at the end")
    seq.add_argument("--sequence-column", default="seq")
    seq.add_argument("--label-columns", help="comma-separated label columns (default Bound)")
    seq.add_argument(
        "--negatives", default="auto", choices=["auto", "none", "dinucleotide-shuffle"]
    )
    seq.set_defaults(func=_run, build=_sequence)
    for p in (seg, cls, seq):
        _study_options(p)


def _study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="study folder (best/, trials.tsv); an existing study there is continued",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start a new study in --out, replacing the old"
    )
    p.add_argument("--base", default=None, help="the model to start from (as in train)")
    p.add_argument(
        "--epochs", type=int_in(1, 100_000), default=None, help="epochs per trial (task default)"
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="wall-clock budget (checked by the tuner: > 0 and at most 30 days)",
    )
    p.add_argument("--trials", type=int_in(1, 100_000), default=None, help="trials to run")
    p.add_argument(
        "--strategy",
        default="line-random",
        choices=["line-random", "tpe", "random"],
        help=STRATEGY_HELP,
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=RANGE",
        help="search range, e.g. lr=1e-5:1e-1:log, batch_size=16,32,64 (repeatable)",
    )
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a hyper-parameter at a value (repeatable)",
    )
    p.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    p.add_argument("--storage", help="optuna storage URL (e.g. postgresql://...) or journal file")
    p.add_argument("--study-name", help="study name in the storage (default napari-dlcb-<task>)")
    p.add_argument("--scheduler", help="dask scheduler address (tcp://host:8786): run trials there")
    p.add_argument(
        "--n-workers", type=int_in(1, 1024), help="start a local dask cluster with N workers"
    )
    add_device(p)
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)


def _base(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    base = {"device": args.device, "seed": args.seed, **fields}
    if args.base is not None:
        base["base"] = args.base
    if args.epochs is not None:
        base["epochs"] = args.epochs
    return base


def _segmentation(args: argparse.Namespace) -> Any:
    from napari_dlcb.tuning.objectives import segmentation_objective

    mode = "quick" if args.labels_kind == "scribbles" else "full"
    return segmentation_objective(
        images=str(args.images),
        labels=str(args.labels),
        base=_base(args, label_kind=args.labels_kind, mode=mode),
        test_images=None if args.test_images is None else str(args.test_images),
        test_labels=None if args.test_labels is None else str(args.test_labels),
        metric=args.metric,
    )


def _classification(args: argparse.Namespace) -> Any:
    from napari_dlcb.tuning.objectives import classification_objective

    return classification_objective(
        images=str(args.images),
        base=_base(args),
        val=None if args.val is None else str(args.val),
        test=None if args.test is None else str(args.test),
    )


def _sequence(args: argparse.Namespace) -> Any:
    from napari_dlcb.tuning.objectives import sequence_objective

    labels = [c.strip() for c in args.label_columns.split(",")] if args.label_columns else None
    negatives = args.negatives
    if negatives == "auto":
        from napari_dlcb.data.dna import read_sequence_table

        df = read_sequence_table(
            args.table, sequence_column=args.sequence_column, label_columns=labels or ["Bound"]
        )
        values = df[labels or ["Bound"]].to_numpy(float)
        values = values[~(values != values)]
        negatives = "dinucleotide-shuffle" if values.size and (values > 0.5).all() else "none"
    return sequence_objective(
        table=args.table,
        base=_base(args),
        test_table=args.test_table,
        sequence_column=args.sequence_column,
        label_columns=labels,
        negatives=negatives,
        seed=args.seed,
    )


def _space(objective: Any, args: argparse.Namespace) -> Any:
    from napari_dlcb.tuning.space import parse_fixed, parse_param

    ranges = [parse_param(t) for t in args.param]
    fixed = dict(parse_fixed(t) for t in args.fix)
    return objective.default_space().with_changes(ranges, fixed)


_INPUTS = {
    "segmentation": ("images", "labels", "test_images", "test_labels"),
    "classification": ("images", "val", "test"),
    "sequence": ("table", "test_table"),
}


def _check_base(args: argparse.Namespace) -> None:
    """Validate the fixed options as the task config before any data is read."""
    if args.task == "segmentation":
        from napari_dlcb.tasks.segmentation import SegmentationConfig as Config

        fields = _base(args, label_kind=args.labels_kind)
    elif args.task == "classification":
        from napari_dlcb.tasks.classification_config import ClassificationConfig as Config

        fields = _base(args)
    else:
        from napari_dlcb.tasks.sequence_config import SequenceConfig as Config

        fields = _base(args)
    Config.from_dict(fields)
    _check_values(Config, fields, args)


def _check_values(config: Any, fields: dict[str, Any], args: argparse.Namespace) -> None:
    """Every value a ``--param`` range or ``--fix`` gives an option must be one it accepts."""
    import dataclasses

    from napari_dlcb.tuning.space import parse_fixed, parse_param

    names = {f.name for f in dataclasses.fields(config)}
    values = [parse_fixed(t) for t in args.fix]
    for p in map(parse_param, args.param):
        values += [(p.name, v) for v in (p.choices if p.kind == "categorical" else (p.low, p.high))]
    for name, value in values:
        if name not in names:
            continue  # not a config option: the objective's space check names it
        try:
            config.from_dict({**fields, name: value})
        except DlcbError:
            raise
        except (TypeError, ValueError) as err:
            raise DlcbError(
                f"hyper-parameter {name}={value!r} is not a value {name} takes"
            ) from err


def _check_study_out(args: argparse.Namespace) -> Path:
    inputs = [getattr(args, name, None) for name in _INPUTS[args.task]]
    if args.base not in (None, "builtin", "scratch") and not str(args.base).startswith("builtin:"):
        inputs.append(args.base)
    out = check_out(
        args.out, kind="study", inputs=inputs, overwrite=args.overwrite, resume=not args.overwrite
    )
    if out.is_dir() and any(out.iterdir()):
        if args.overwrite:
            import shutil

            shutil.rmtree(out)
            say(f"napari-dlcb: --overwrite: the study in {out} was removed; starting a new one")
        else:
            say(f"napari-dlcb: continuing the study in {out} (--overwrite starts a new one)")
    return out


def _run(args: argparse.Namespace) -> int:
    from napari_dlcb.tuning.study import (
        StudyFinished,
        tune,
    )

    if args.budget_minutes is None and args.trials is None:
        raise DlcbError("give a budget: --budget-minutes and/or --trials")
    if args.budget_minutes is not None:
        from napari_dlcb.tasks.base import check_positive

        check_positive("budget in minutes", args.budget_minutes, high=60 * 24 * 30)
    _check_base(args)
    args.out = _check_study_out(args)
    objective = args.build(args)
    space = _space(objective, args)
    say(
        f"napari-dlcb: tuning {objective.kind} ({args.strategy}), maximising validation "
        f"{objective.metric}; searching " + "; ".join(space.describe())
    )
    t0 = time.perf_counter()
    stop = threading.Event()
    for ev in tune(
        objective,
        out_dir=args.out,
        space=space,
        strategy=args.strategy,
        budget_minutes=args.budget_minutes,
        n_trials=args.trials,
        storage=args.storage,
        study_name=args.study_name,
        seed=args.seed,
        prune=not args.no_prune,
        stop=stop,
        scheduler=args.scheduler,
        n_workers=args.n_workers,
    ):
        line = _describe(ev, t0)
        if line:
            say(line)
        if isinstance(ev, StudyFinished) and ev.best_number is None:
            raise DlcbError("no trial finished: nothing to choose from (see trials.tsv)")
    return 0


def _describe(ev: Any, t0: float) -> str | None:
    from napari_dlcb.tuning.study import StudyFinished, TrialFinished, TrialStarted

    elapsed = f"[{(time.perf_counter() - t0) / 60:.1f} min]"
    if isinstance(ev, TrialStarted):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in ev.params.items())
        return f"{elapsed} trial {ev.number}: {params}"
    if isinstance(ev, TrialFinished):
        value = "" if not math.isfinite(ev.value) else f" value {ev.value:.4f}"
        where = "" if ev.worker == "local" else f" on {ev.worker}"
        why = f" ({ev.message})" if ev.message else ""
        return f"{elapsed} trial {ev.number} {ev.state}{value} in {ev.seconds:.0f} s{where}{why}"
    if isinstance(ev, StudyFinished):
        if ev.best_number is None:
            return None
        test = ""
        if ev.test:
            test = "; test (once, best model only): " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.test.items()
            )
        return (
            f"{elapsed} study {ev.reason}: {ev.n_complete} complete, {ev.n_pruned} pruned, "
            f"{ev.n_failed} failed; best trial {ev.best_number} value {ev.best_value:.4f} "
            f"({', '.join(f'{k}={_fmt(v)}' for k, v in ev.best_params.items())}); "
            f"model in {ev.best_dir}{test}"
        )
    return None


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
