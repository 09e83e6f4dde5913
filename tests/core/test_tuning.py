"""The tuner on a small real task: strategies, pruning, budget, storage, resume, bad input."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import Task, TaskConfig, check_int, check_positive
from napari_dlcb.tuning.objective import Objective
from napari_dlcb.tuning.space import Param, SearchSpace, parse_fixed, parse_param
from napari_dlcb.tuning.study import StudyFinished, TrialEpoch, TrialFinished, tune


@dataclasses.dataclass
class ToyConfig(TaskConfig):
    lr: float = 1e-3
    hidden: int = 8
    epochs: int = 4
    seed: int = 0

    def validate(self):
        check_positive("lr", self.lr)
        check_int("hidden", self.hidden)
        check_int("epochs", self.epochs)
        return self


class ToyTask(Task):
    """A small MLP on a fixed two-moons-like problem (a real model, trained by the engine)."""

    kind = "classification"

    def __init__(self, x, y, xv, yv, config):
        import torch

        self.config = config
        torch.manual_seed(config.seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(2, config.hidden), torch.nn.ReLU(), torch.nn.Linear(config.hidden, 2)
        )
        self.meta = None
        self.history = []
        self.data = (x, y, xv, yv)

    def fit(self, *, stop=None, max_time=None):
        import torch
        from torch.utils.data import TensorDataset

        from napari_dlcb.training.engine import fit
        from napari_dlcb.training.metrics import accuracy_metric

        x, y, xv, yv = (torch.as_tensor(a) for a in self.data)
        yield from fit(
            self.model,
            TensorDataset(x, y),
            TensorDataset(xv, yv),
            metrics=accuracy_metric,
            monitor="accuracy",
            epochs=self.config.epochs,
            lr=self.config.lr,
            batch_size=32,
            device="cpu",
            seed=self.config.seed,
            stop=stop,
            max_time=max_time,
            early_stopping=None,
        )

    def predict(self, data):
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(data)).argmax(1).numpy()

    def save(self, path):
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.model.state_dict(), str(path / "weights.safetensors"))
        (path / "metadata.json").write_text('{"task": "toy", "extra": {}}')
        return path


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = ((x[:, 0] ** 2 + np.sin(2 * x[:, 1])) > 1).astype(np.int64)
    return x, y


class ToyObjective(Objective):
    fit_defaults = {}  # noqa: RUF012 - the toy task's fit takes no preview options
    kind = "classification"
    metric = "accuracy"
    direction = "maximize"

    def __init__(self, base=None):
        super().__init__(base or ToyConfig())
        self.train = _data(256, 0)
        self.val = _data(128, 1)
        self.test = _data(128, 2)
        self.n_tested = 0

    def default_space(self):
        return SearchSpace(
            [
                Param.float("lr", 1e-4, 3e-1, log=True, important=True),
                Param.int("hidden", 2, 32, important=True),
            ]
        )

    def make_task(self, config):
        return ToyTask(*self.train, *self.val, config)

    def test_metrics(self, model_dir):
        self.n_tested += 1
        return {"accuracy": 0.5}


def test_parse_params_and_fixed():
    assert parse_param("lr=1e-5:1e-1:log").log
    assert parse_param("hidden=4:64").kind == "int"
    assert parse_param("dropout=0.0:0.5").kind == "float"
    assert parse_param("bn=true,false").choices == (True, False)
    assert parse_fixed("lr=0.01") == ("lr", 0.01)
    for bad in ("lr", "lr=", "lr=1:2:cube", "lr=a:b", "lr=0:1:log", "x=3:1"):
        with pytest.raises(DlcbError):
            parse_param(bad)
    with pytest.raises(DlcbError):
        parse_fixed("lr")


def test_space_checks_unknown_and_empty():
    space = ToyObjective().default_space()
    with pytest.raises(DlcbError, match="unknown hyper-parameter 'filters'"):
        space.with_changes([Param.int("filters", 1, 4)]).check(ToyConfig().to_dict())
    with pytest.raises(DlcbError, match="empty"):
        space.with_changes(fixed={"lr": 0.01, "hidden": 4}).check(ToyConfig().to_dict())


def test_line_random_runs_line_searches_then_refines(tmp_path):
    obj = ToyObjective()
    events = list(tune(obj, out_dir=tmp_path, strategy="line-random", n_trials=10, seed=3))
    done = [e for e in events if isinstance(e, TrialFinished)]
    assert len(done) == 10
    # the first 4 trials vary lr only (hidden at the default 8), the next 4 vary hidden
    assert {e.params["hidden"] for e in done[:4]} == {8}
    assert len({e.params["lr"] for e in done[:4]}) == 4
    assert len({e.params["hidden"] for e in done[4:8]}) >= 3
    fin = events[-1]
    assert isinstance(fin, StudyFinished) and fin.best_number is not None
    assert fin.best_value >= 0.7
    assert (tmp_path / "best" / "weights.safetensors").exists()
    rows = (tmp_path / "trials.tsv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith("number\tstate")
    assert obj.n_tested == 1  # the test set is used once, for the chosen model
    assert any(isinstance(e, TrialEpoch) for e in events)


@pytest.mark.parametrize("strategy", ["tpe", "random"])
def test_strategies_are_seeded(tmp_path, strategy):
    a = [
        e.params
        for e in tune(ToyObjective(), out_dir=tmp_path / "a", strategy=strategy, n_trials=3, seed=1)
        if isinstance(e, TrialFinished)
    ]
    b = [
        e.params
        for e in tune(ToyObjective(), out_dir=tmp_path / "b", strategy=strategy, n_trials=3, seed=1)
        if isinstance(e, TrialFinished)
    ]
    assert a == b and len(a) == 3


def test_pruning_stops_hopeless_trials(tmp_path):
    obj = ToyObjective(ToyConfig(epochs=8))
    space = SearchSpace([Param.float("lr", 1e-6, 1e-1, log=True)])
    events = list(tune(obj, out_dir=tmp_path, space=space, strategy="random", n_trials=12, seed=0))
    states = [e.state for e in events if isinstance(e, TrialFinished)]
    assert "pruned" in states
    pruned = [e for e in events if isinstance(e, TrialFinished) and e.state == "pruned"]
    assert all(len(e.curve) < 8 for e in pruned)


def test_budget_in_minutes_is_kept(tmp_path):
    import time

    t0 = time.perf_counter()
    events = list(
        tune(
            ToyObjective(ToyConfig(epochs=50)),
            out_dir=tmp_path,
            strategy="random",
            budget_minutes=0.25,
            seed=0,
        )
    )
    assert time.perf_counter() - t0 < 0.25 * 60 + 10
    assert events[-1].reason == "budget"


def test_bad_requests_are_one_line_errors(tmp_path):
    obj = ToyObjective()
    cases = [
        {"strategy": "grid", "n_trials": 1},
        {"n_trials": None},
        {"budget_minutes": 0},
        {"n_trials": 0},
        {"budget_minutes": float("nan")},
    ]
    for kw in cases:
        with pytest.raises(DlcbError) as err:
            list(tune(obj, out_dir=tmp_path, **kw))
        assert "\n" not in str(err.value)
    with pytest.raises(DlcbError, match="cannot open the study storage"):
        list(
            tune(
                obj, out_dir=tmp_path, n_trials=1, storage="postgresql://u:secret@127.0.0.1:1/none"
            )
        )


def test_killed_study_resumes_without_losing_trials(tmp_path):
    """SIGKILL a study mid-trial; the next run keeps the finished trials and goes on."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_tuning import ToyObjective, ToyConfig
        from napari_dlcb.tuning.study import tune, TrialFinished
        for ev in tune(ToyObjective(ToyConfig(epochs=30)), out_dir={str(tmp_path / "s")!r},
                       strategy="random", n_trials=50, seed=0, prune=False):
            if isinstance(ev, TrialFinished):
                print("done", ev.number, flush=True)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen = 0
    for line in proc.stdout:
        if line.startswith("done"):
            seen += 1
        if seen == 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    events = list(
        tune(
            ToyObjective(ToyConfig(epochs=30)),
            out_dir=tmp_path / "s",
            strategy="random",
            n_trials=1,
            seed=0,
            prune=False,
        )
    )
    fin = events[-1]
    assert fin.n_complete >= 3  # the two from before the kill survive, plus the new one
    assert math.isfinite(fin.best_value)


def test_postgresql_storage(tmp_path, postgres_url):
    events = list(
        tune(
            ToyObjective(),
            out_dir=tmp_path,
            strategy="random",
            n_trials=2,
            seed=0,
            storage=postgres_url,
            study_name="pg-test",
        )
    )
    assert events[-1].n_complete == 2
    study = optuna.load_study(study_name="pg-test", storage=postgres_url)
    assert len(study.trials) == 2


def _gata3_table(shared_data, tmp_path, n=240):
    import pandas as pd

    src = next((shared_data / "deepbind_encode_chipseq" / "train").glob("GATA3*_AC.seq.gz"))
    df = pd.read_csv(src, sep="\t").head(n)
    out = tmp_path / "gata3.tsv"
    df.to_csv(out, sep="\t", index=False)
    return out


def test_sequence_study_on_two_dask_workers(tmp_path, shared_data):
    """Real GATA3 peaks: trials run in parallel on 2 local dask workers, one storage."""
    from napari_dlcb.tuning.objectives import sequence_objective

    table = _gata3_table(shared_data, tmp_path)
    obj = sequence_objective(
        table=str(table),
        negatives="dinucleotide-shuffle",
        base={"epochs": 2, "batch_size": 64, "model_kwargs": {"filters": 8}, "device": "cpu"},
    )
    space = SearchSpace([Param.float("lr", 1e-3, 1e-2, log=True), Param.int("kernel_size", 8, 16)])
    events = list(
        tune(
            obj,
            out_dir=tmp_path / "s",
            space=space,
            strategy="random",
            n_trials=4,
            seed=0,
            n_workers=2,
            prune=False,
        )
    )
    done = [e for e in events if isinstance(e, TrialFinished)]
    assert len(done) == 4 and all(e.state == "complete" for e in done), done
    assert len({e.worker for e in done}) == 2  # both workers ran trials
    fin = events[-1]
    assert fin.n_complete == 4 and 0.5 < fin.best_value <= 1.0
    assert (tmp_path / "s" / "best" / "metadata.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trials", "1", "--param", "colour=1:2"], "unknown hyper-parameter 'colour'"),
        (["--budget-minutes", "0"], "budget in minutes must be"),
        ([], "give a budget"),
        (
            [
                "--trials",
                "1",
                "--fix",
                "lr=0.01",
                "--fix",
                "batch_size=32",
                "--fix",
                "kernel_size=9",
                "--fix",
                "filters=8",
                "--fix",
                "dropout=0.1",
                "--fix",
                "weight_decay=0",
            ],
            "empty",
        ),
        (
            ["--trials", "1", "--storage", "postgresql://u:pw@127.0.0.1:1/x"],
            "cannot open the study",
        ),
        (["--trials", "1", "--scheduler", "tcp://127.0.0.1:1"], "cannot reach the dask scheduler"),
        (["--trials", "1", "--param", "lr=1:0"], "low must be <= high"),
    ],
)
def test_tune_cli_bad_input_is_one_line(tmp_path, capsys, extra, message):
    from napari_dlcb.cli import main

    table = tmp_path / "t.tsv"
    table.write_text("seq\tBound\n" + "".join(f"{'ACGT' * 5}\t1\n" for _ in range(8)))
    code = main(
        [
            "tune",
            "sequence",
            "--table",
            str(table),
            "--out",
            str(tmp_path / "s"),
            "--device",
            "cpu",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1, err


def test_classification_study_scores_its_test_folder_once(tmp_path, capsys):
    """`tune classification --test DIR` ends with the best model's test accuracy (was a crash)."""
    from skimage.io import imsave

    from napari_dlcb.cli import main

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for label, level in (("dim", 40), ("bright", 200)):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                im = np.clip(level + rng.normal(0, 10, (16, 16)), 0, 255).astype(np.uint8)
                imsave(tmp_path / split / label / f"{i}.png", im, check_contrast=False)
    code = main(
        ["tune", "classification", "--images", str(tmp_path / "train"), "--test",
         str(tmp_path / "test"), "--out", str(tmp_path / "study"), "--base", "none",
         "--trials", "1", "--epochs", "2", "--fix", "width=16", "--fix", "blocks=1,1,1",
         "--device", "cpu"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "test (once, best model only): test_accuracy" in out and "n_test 12" in out, out


def test_trials_are_not_previewed_and_every_task_accepts_its_fit_defaults():
    import math

    from napari_dlcb.tasks.segmentation import SegmentationConfig
    from napari_dlcb.tuning.objectives import (
        ClassificationObjective,
        SegmentationObjective,
        SequenceObjective,
    )

    for cls in (ClassificationObjective, SegmentationObjective, SequenceObjective):
        assert cls.fit_defaults == {"preview_interval": math.inf}, cls
    # the segmentation config takes inf as "no previews"; other bad values still fail
    cfg = SegmentationConfig().replace(**SegmentationObjective.fit_defaults)
    assert cfg.preview_interval == math.inf
    with pytest.raises(DlcbError, match="preview_interval"):
        SegmentationConfig().replace(preview_interval=-1.0)
