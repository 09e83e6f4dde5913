"""Pictures of a study: optimisation history, parallel coordinates, importances, curves.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no GUI), so
they are safe in a worker thread: the Tune dock shows them as a pixmap, and
the CLI writes them next to the study as ``study.png``. Parameter importances
come from optuna (:func:`optuna.importance.get_param_importances`, fANOVA).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["render_study", "save_study_png", "study_summary"]

_BG, _FG, _GRID = "#262930", "#d1d2d4", "#3b3f46"
_GOOD, _LINE = "#4fa3ff", "#ff9f43"


def study_summary(study: Any) -> dict[str, Any]:
    """Plain data for the plots: complete trials, their values, params, curves, importances."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    importances: dict[str, float] = {}
    varying = {k for t in done for k in t.params if len({str(u.params.get(k)) for u in done}) > 1}
    if len(done) >= 3 and varying:
        try:
            import optuna

            importances = dict(optuna.importance.get_param_importances(study))
        except (RuntimeError, ValueError, ZeroDivisionError):  # too few distinct trials
            importances = {}
    return {
        "maximize": study.direction.name == "MAXIMIZE",
        "numbers": [t.number for t in done],
        "values": [float(t.value) for t in done],
        "params": [dict(t.params) for t in done],
        "curves": [
            (t.number, t.state.name.lower(), [c["value"] for c in t.user_attrs.get("curve", [])])
            for t in trials
        ],
        "importances": importances,
    }


def render_study(summary: dict[str, Any], *, size: tuple[int, int] = (900, 700), dpi: int = 90):
    """Draw the four panels; return ``(rgba_bytes, width, height)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, facecolor=_BG)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    _history(axes[0, 0], summary)
    _parallel(axes[0, 1], summary)
    _importances(axes[1, 0], summary)
    _curves(axes[1, 1], summary)
    for ax in axes.flat:
        _style(ax)
    fig.tight_layout()
    canvas.draw()
    buf = canvas.buffer_rgba()
    return bytes(buf), buf.shape[1], buf.shape[0]


def save_study_png(study: Any, path: str | Path) -> Path:
    """Write the study's pictures as a PNG (used by ``napari-dlcb tune``)."""
    import numpy as np
    from PIL import Image

    data, w, h = render_study(study_summary(study))
    Image.fromarray(np.frombuffer(data, np.uint8).reshape(h, w, 4)).save(path)
    return Path(path)


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def _style(ax: Any) -> None:
    ax.set_facecolor(_BG)
    for spine in ax.spines.values():
        spine.set_color(_FG)
    ax.tick_params(colors=_FG, labelsize=7)
    ax.title.set_color(_FG)
    ax.xaxis.label.set_color(_FG)
    ax.yaxis.label.set_color(_FG)
    ax.grid(True, color=_GRID, lw=0.5)


def _history(ax: Any, s: dict[str, Any]) -> None:
    ax.set_title("Optimisation history", fontsize=9)
    ax.set_xlabel("trial", fontsize=8)
    ax.set_ylabel("validation value", fontsize=8)
    _integer_x(ax)
    if not s["values"]:
        return
    ax.plot(s["numbers"], s["values"], "o", color=_GOOD, ms=4, label="trial")
    best, run = [], -math.inf if s["maximize"] else math.inf
    for v in s["values"]:
        run = max(run, v) if s["maximize"] else min(run, v)
        best.append(run)
    ax.plot(s["numbers"], best, "-", color=_LINE, lw=1.5, label="best so far")
    ax.legend(fontsize=7, facecolor=_BG, labelcolor=_FG, edgecolor=_GRID)


def _parallel(ax: Any, s: dict[str, Any]) -> None:
    """Each trial a line across its (min-max scaled) parameters, coloured by its value."""
    import numpy as np
    from matplotlib import cm

    ax.set_title("Parallel coordinates", fontsize=9)
    names = sorted({k for p in s["params"] for k in p})
    if not names or not s["values"]:
        return
    cols = []
    for name in names:
        raw = [p.get(name) for p in s["params"]]
        try:
            vals = np.array([float(v) for v in raw])
            if (vals > 0).all() and vals.max() / max(vals.min(), 1e-300) > 100:
                vals = np.log10(vals)
        except (TypeError, ValueError):  # categorical: rank of the choice
            order = sorted({str(v) for v in raw})
            vals = np.array([order.index(str(v)) for v in raw], float)
        span = np.ptp(vals)
        cols.append((vals - vals.min()) / span if span > 0 else np.full(len(vals), 0.5))
    grid = np.stack(cols, 1)
    v = np.array(s["values"])
    norm = (v - v.min()) / (np.ptp(v) or 1.0)
    for row, c in zip(grid, norm):
        ax.plot(range(len(names)), row, color=cm.viridis(c if s["maximize"] else 1 - c), lw=1)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7, ha="right")
    ax.set_yticks([])


def _importances(ax: Any, s: dict[str, Any]) -> None:
    ax.set_title("Parameter importance (fANOVA)", fontsize=9)
    imp = s["importances"]
    if not imp:
        ax.text(
            0.5,
            0.5,
            "needs 3+ complete trials",
            ha="center",
            va="center",
            color=_FG,
            fontsize=8,
            transform=ax.transAxes,
        )
        return
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names], color=_GOOD)
    ax.tick_params(axis="y", labelsize=7)


def _curves(ax: Any, s: dict[str, Any]) -> None:
    ax.set_title("Learning curves of the trials", fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    _integer_x(ax)
    for _, state, curve in s["curves"]:
        if curve:
            ax.plot(
                range(1, len(curve) + 1),
                curve,
                lw=1,
                color=_GOOD if state == "complete" else "#888888",
                ls="-" if state == "complete" else ":",
            )
