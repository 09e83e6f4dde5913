"""Command-line verbs for DNA sequence models.

``napari-dlcb train sequence`` and ``predict sequence`` (``mutation-map``,
``score-variants`` and ``motifs`` are in :mod:`.sequence_interpret`). Importing this module is cheap: torch and
the models are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from napari_dlcb.commands._args import add_device
from napari_dlcb.commands._outputs import check_out, check_out_file, write_tsv
from napari_dlcb.commands._report import describe_event, say
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.sequence_config import ARCHITECTURES

__all__ = ["external_options", "load_model", "note", "register"]


def note(msg: str) -> None:
    """Say ``msg`` on stderr (stdout stays for data)."""
    say(msg, stream=sys.stderr)


def register(train_sub, predict_sub, top_sub) -> None:
    """Add ``train sequence`` and ``predict sequence`` to the ``napari-dlcb`` parser.

    Parameters
    ----------
    train_sub, predict_sub : argparse subparser collections
        Of ``napari-dlcb train ...`` and ``napari-dlcb predict ...``.
    top_sub : argparse subparser collection
        The top-level one (unused: the DNA interpretation verbs are in
        :mod:`napari_dlcb.commands.sequence_interpret`).
    """
    _register_train(train_sub)
    _register_predict(predict_sub)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """The data options of ``train sequence``: a table, or a genome with peaks."""
    src = p.add_argument_group("data (a table, or a genome with peaks)")
    src.add_argument("--table", help="TSV/CSV sequence table (gzip ok)")
    src.add_argument("--fasta", help="genome FASTA (with --bed)")
    src.add_argument("--bed", help="peaks BED (with --fasta)")
    src.add_argument(
        "--window", type=int, default=1000, help="window length in bp for --bed (default 1000)"
    )
    src.add_argument(
        "--bed-labels",
        default="membership",
        help="'membership', 'name' (one task per BED name), 'none' (only --signal-labels) "
        "or comma-separated BED columns",
    )
    src.add_argument(
        "--signal-labels",
        help="comma-separated bigWig/bedGraph files (with --bed): one regression task per track, "
        "the mean signal over each window",
    )
    src.add_argument(
        "--sequence-column", default="seq", help="table column with sequences (default seq)"
    )
    src.add_argument("--label-columns", help="comma-separated label columns (default Bound)")
    src.add_argument(
        "--negatives",
        choices=["auto", "none", "dinucleotide-shuffle", "gc-matched", "flanks"],
        default="auto",
        help="how to make negatives; auto: dinucleotide-shuffle when every label is positive, "
        "flanks with --signal-labels (default)",
    )
    src.add_argument(
        "--task-type",
        choices=["auto", "binary", "regression"],
        default="auto",
        help="auto: binary when every label is 0 or 1, else regression (MSE on standardised "
        "targets, Pearson r)",
    )


def _register_train(train_sub) -> None:
    p = train_sub.add_parser(
        "sequence",
        help="train or fine-tune a DNA CNN (DeepBind / Basset) on a sequence table or on BED peaks",
        description="Train a DNA model from --table FILE, or from --fasta GENOME --bed PEAKS (windows centred on peaks).",
    )
    _add_data_options(p)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument(
        "--arch",
        "--architecture",
        dest="arch",
        choices=list(ARCHITECTURES),
        default="deepbind",
        help="deepbind, basset, deepsea (CNNs) or danq (CNN + bidirectional LSTM)",
    )
    p.add_argument(
        "--base",
        help="fine-tune from 'builtin' (the synthetic-genome demo model), 'builtin:dna-encode' "
        "(real ChIP-seq peaks) or a model folder instead of training from scratch",
    )
    p.add_argument(
        "--filters",
        type=int,
        help="first-layer filters (default 256 for deepbind, 300 for basset, 64 for danq, "
        "320 for deepsea)",
    )
    p.add_argument(
        "--epochs", type=int, help="most epochs (default 100; early stopping ends sooner)"
    )
    p.add_argument("--batch-size", type=int, help="sequences per step (default 64)")
    p.add_argument("--lr", type=float, help="learning rate (default 3e-3)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument(
        "--val-chroms", help="comma-separated chromosomes held out for validation (with --bed)"
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop training after this many minutes (k-fold: shared by the folds)",
    )
    _add_folds(p)
    add_device(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)


def _add_folds(p) -> None:
    """``--folds K`` of ``train sequence`` (k-fold training, :mod:`napari_dlcb.tasks.sequence_kfold`)."""
    p.add_argument(
        "--folds",
        type=int,
        help="k-fold training: K members, each validated on its own fold, saved as one model "
        "predicting their mean; prints the cross-validated score (default: 5 below 5,000 "
        "training rows without --val-chroms, else 1 = a single model)",
    )


def _register_predict(predict_sub) -> None:
    p = predict_sub.add_parser("sequence", help="score sequences with a DNA model")
    p.add_argument(
        "--model",
        required=True,
        help="model folder, 'builtin' (synthetic-genome demo), 'builtin:dna-encode' (real "
        "ENCODE peaks), or a TorchScript (.pt) / ONNX (.onnx) file with a sidecar",
    )
    p.add_argument("--table", required=True, help="TSV/CSV table with a sequence column")
    p.add_argument(
        "--out", required=True, help="TSV to write: the rows plus score or score_<task> columns"
    )
    p.add_argument("--sequence-column", default="seq")
    p.add_argument("--batch-size", type=int, default=256)
    add_device(p)
    external_options(p)
    p.set_defaults(func=_predict)


def external_options(p, *, window: bool = True) -> None:
    """``--profile-window`` for TorchScript/ONNX models (models.external_dna).

    ``--trust-model`` (consent to run a TorchScript file) is read by cli.py anywhere on the line.
    """
    if window:
        p.add_argument(
            "--profile-window",
            metavar="START:END",
            help="for a model with profile outputs (N, T, L): sum positions START:END of the "
            "profile (0-based, half-open; default the whole profile)",
        )


def load_model(args: argparse.Namespace):
    """``(model, meta)`` for ``--model`` (saved, built-in, or TorchScript/ONNX + sidecar).

    Says which model (which built-in) it is.
    """
    from napari_dlcb.inference.sequence import describe_sequence_model, load_sequence_model
    from napari_dlcb.models.external_dna import with_profile_window

    model, meta = load_sequence_model(args.model, device=_device(args.device))
    note(f"model: {describe_sequence_model(meta, args.model)}")
    return with_profile_window(model, getattr(args, "profile_window", None)), meta


def _device(name: str) -> str:
    from napari_dlcb.device import resolve_device

    return str(resolve_device(name))


# --------------------------------------------------------------------------- handlers
def _train(args: argparse.Namespace) -> int:
    from napari_dlcb.tasks.sequence import SequenceTask
    from napari_dlcb.training.engine import fit_to_end

    inputs = [args.table, args.fasta, args.bed, args.base, *(args.signal_labels or "").split(",")]
    check_out(args.out, kind="model", inputs=inputs, overwrite=args.overwrite)
    config = _config(args)
    seqs, y, tasks, val_index, negatives = _training_data(args)
    note(f"{len(seqs)} sequences, {len(tasks)} task(s): {', '.join(tasks)}; negatives: {negatives}")
    source = (
        Path(args.table).name if args.table else f"{Path(args.bed).name} on {Path(args.fasta).name}"
    )
    trainer = SequenceTask(
        seqs, y, task_names=tasks, config=config, val_index=val_index, trained_on=source
    )
    t0 = time.perf_counter()

    def show(ev) -> None:
        fold = getattr(ev, "kind", None) == "fold"
        line = ev.message if fold else describe_event(ev, epochs=config.epochs, t0=t0)
        if line is not None:
            note(line)

    fit_to_end(trainer.fit(), on_event=show)
    out = trainer.save(args.out)
    cv = trainer.meta.extra.get("cross_validation")
    if cv:
        from napari_dlcb.tasks.sequence_kfold import describe_cv

        note(f"{trainer.folds}-fold model: {describe_cv(cv)}")
    note(f"saved {out}")
    return 0


def _config(args: argparse.Namespace):
    """The :class:`~napari_dlcb.tasks.sequence_config.SequenceConfig` the options describe."""
    from napari_dlcb.tasks.sequence_config import SequenceConfig

    kwargs = {} if args.base else _model_kwargs(args.arch, args.filters)
    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
    return SequenceConfig(
        arch=args.arch,
        base=args.base,
        model_kwargs=kwargs,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=_device(args.device),
        task_type=args.task_type,
        max_time=args.max_minutes * 60 if args.max_minutes else None,
        folds=args.folds,
        **{k: v for k, v in given.items() if v is not None},  # else the config's defaults
    ).validate()


def _model_kwargs(arch: str, filters: int | None) -> dict:
    """Architecture arguments from ``--filters`` (CLI defaults sized for a CPU)."""
    if arch == "deepbind":  # else SequenceConfig.DEEPBIND_DEFAULTS
        return {"filters": filters} if filters is not None else {}
    if arch == "basset":
        return {"filters": (filters, 200, 200)} if filters is not None else {}
    if arch == "danq":  # DanQ's 320 filters / 320 LSTM units are a GPU model; 64/64 fits a CPU
        f = filters or 64
        return {"filters": f, "lstm": f, "hidden": 2 * f}
    if arch == "deepsea":
        return {"filters": (filters, filters * 3 // 2, filters * 3)} if filters is not None else {}
    return {}


def _training_data(args: argparse.Namespace):
    """``(seqs, y, task_names, val_index, negatives)`` from ``--table`` or ``--fasta/--bed``."""
    from napari_dlcb.tasks.sequence import table_training_data

    if bool(args.table) == bool(args.fasta or args.bed):
        raise DlcbError("give either --table FILE, or --fasta GENOME with --bed PEAKS")
    if not args.table:
        return _bed_data(args)
    labels = [c.strip() for c in args.label_columns.split(",")] if args.label_columns else None
    negatives = args.negatives
    if negatives == "auto":
        negatives = _auto_negatives(args.table, args.sequence_column, labels)
    seqs, y, tasks = table_training_data(
        args.table,
        sequence_column=args.sequence_column,
        label_columns=labels,
        negatives=negatives,
        seed=args.seed,
    )
    return seqs, y, tasks, None, negatives


def _bed_data(args: argparse.Namespace):
    from napari_dlcb.tasks.sequence import bed_training_data

    if not (args.fasta and args.bed):
        raise DlcbError("--fasta and --bed go together")
    tracks = [t.strip() for t in args.signal_labels.split(",")] if args.signal_labels else []
    negatives = args.negatives
    if negatives == "auto":
        negatives = "flanks" if tracks else "dinucleotide-shuffle"
    bed_labels = (
        args.bed_labels
        if args.bed_labels in ("membership", "name", "none")
        else args.bed_labels.split(",")
    )
    if bed_labels == "none" and not tracks:
        raise DlcbError("--bed-labels none needs --signal-labels")
    seqs, y, tasks, chroms = bed_training_data(
        args.fasta,
        args.bed,
        window=args.window,
        negatives=negatives,
        labels=bed_labels,
        tracks=tracks,
        seed=args.seed,
    )
    val_index = None
    if args.val_chroms:
        import numpy as np

        held = {c.strip() for c in args.val_chroms.split(",")}
        val_index = np.flatnonzero([c in held for c in chroms])
        if len(val_index) == 0:
            raise DlcbError(f"no window lies on the validation chromosomes {sorted(held)}")
    return seqs, y, tasks, val_index, negatives


def _auto_negatives(table: str, column: str, labels) -> str:
    from napari_dlcb.data.dna import read_sequence_table

    df = read_sequence_table(
        table,
        sequence_column=column,
        label_columns=labels or (["Bound"] if labels is None else None),
    )
    cols = labels or (["Bound"] if "Bound" in df else [])
    if cols:
        vals = df[cols].to_numpy(float)
        vals = vals[~(vals != vals)]
        if vals.size and (vals > 0.5).all():
            return "dinucleotide-shuffle"
    return "none"


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_dlcb.data.dna import read_sequence_table
    from napari_dlcb.inference.sequence import predict_sequences

    out = check_out_file(args.out, inputs=[args.table, args.model])
    model, meta = load_model(args)
    df = read_sequence_table(args.table, sequence_column=args.sequence_column)
    from napari_dlcb.data.dna import one_hot

    x = one_hot(df[args.sequence_column].astype(str).tolist())
    prob = predict_sequences(
        model,
        x,
        meta=meta,
        batch_size=args.batch_size,
        rc_average=meta.extra.get("rc_average", True),
    )
    if prob.shape[1] == 1:
        df["score"] = prob[:, 0]
    else:
        for j, name in enumerate(meta.classes):
            df[f"score_{name}"] = prob[:, j]
    write_tsv(out, df)
    note(f"wrote {len(df)} rows to {out} (mean score {float(np.mean(prob)):.3f})")
    return 0
