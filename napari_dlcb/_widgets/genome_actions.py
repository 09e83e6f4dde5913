"""The Genome view's model actions: load, predict tracks, mutation map, attribution, motifs, variants, train.

A mixin of :class:`~napari_dlcb._widgets.genome.GenomeWidget` (which owns the
fields, the :class:`~napari_dlcb._widgets._jobs.JobRunner` ``jobs`` and the
:class:`~napari_dlcb._widgets.genome_browser.GenomeBrowser` ``browser``). Each
action checks that the region shown is the one asked for, loads the model in
a job the first time, then runs ONE job whose result becomes a track.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import QTableWidgetItem

from napari_dlcb._widgets._common import refill_combo
from napari_dlcb._widgets.genome_motifs import MotifActions, attribution_job
from napari_dlcb.errors import DlcbError

__all__ = [
    "SESSION_MODEL",
    "ModelActions",
    "MutationBlock",
    "mutation_map_blocks",
    "viewport_first",
]

#: what the model field says after training in the dock
SESSION_MODEL = "trained in this session"


def core(target: str, *, takes_stop: bool = False) -> Callable[..., Any]:
    """``"module:function"`` as a job function that imports its module when it runs.

    The job runs in a worker thread, so torch and the models are imported
    there, never on the GUI thread (the first import of torch takes seconds).

    Examples
    --------
    >>> f = core("napari_dlcb.io.regions:parse_locus")
    >>> f("chr1:11-20").start
    10
    """
    module, name = target.split(":")

    def run(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    params = [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)]
    if takes_stop:  # what JobRunner looks at to pass its stop event
        params.append(inspect.Parameter("stop", inspect.Parameter.KEYWORD_ONLY, default=None))
    run.__name__ = run.__qualname__ = name
    run.__signature__ = inspect.Signature(params)
    return run


@dataclass(frozen=True)
class MutationBlock:
    """One block of a mutation map (positions ``start:end`` of the region), with job progress."""

    done: int
    total: int
    message: str
    start: int
    end: int
    values: np.ndarray


def mutation_map_blocks(
    model: Any, x: np.ndarray, blocks: list[tuple[int, int]], *, target: int, device: str
) -> Iterator[MutationBlock]:
    """:func:`~napari_dlcb.interpret.ism.iter_mutation_map` for one task, as job progress."""
    from napari_dlcb.interpret.ism import iter_mutation_map

    stream = iter_mutation_map(
        model, x, regions=blocks, target=target, batch_size=256, device=device
    )
    for done, (_, s, e, block) in enumerate(stream, 1):
        yield MutationBlock(done, len(blocks), f"positions {s}-{e}", s, e, block[..., 0])


def viewport_first(lo: int, hi: int, length: int, *, block: int = 64) -> list[tuple[int, int]]:
    """Blocks covering ``[0, length)``: the viewport ``[lo, hi)`` first, then outward.

    Examples
    --------
    >>> viewport_first(10, 20, 40, block=10)
    [(10, 20), (0, 10), (20, 30), (30, 40)]
    """
    out = [(s, min(hi, s + block)) for s in range(lo, hi, block)]
    left = [(max(0, e - block), e) for e in range(lo, 0, -block)]
    right = [(s, min(length, s + block)) for s in range(hi, length, block)]
    for k in range(max(len(left), len(right))):
        if k < len(left):
            out.append(left[k])
        if k < len(right):
            out.append(right[k])
    return out


def _one_hot(seq: str) -> np.ndarray:
    from napari_dlcb.data.onehot import one_hot

    return one_hot(seq)


class ModelActions(MotifActions):
    """Model-driven actions of the Genome view (see module docs)."""

    # ------------------------------------------------------------------ set-up
    def _init_model_state(self) -> None:
        self._model = self._meta = self._model_key = None
        self._pending: list[Callable[[Any, Any], None]] = []
        self._mm_cache: dict[tuple, np.ndarray] = {}
        self._last_mm_draw = 0.0
        self._motif_hits_source: list = []
        self.filter_motifs = self.motif_matches = self.variant_table = None
        self.mm_layer = self.attr_layer = None

    def _connect_actions(self) -> None:
        self.pred_btn.clicked.connect(self.start_predict)
        self.mm_btn.clicked.connect(self.start_mutation_map)
        self.attr_btn.clicked.connect(self.start_attribution)
        self.motif_btn.clicked.connect(self.start_filter_motifs)
        self.scan_btn.clicked.connect(self.start_scan)
        self.train_btn.clicked.connect(self.start_training)

    def _device(self) -> str:
        return self.device.currentText() or "auto"

    def _task_name(self, meta: Any, target: int) -> str:
        return str(meta.classes[target]) if target < len(meta.classes) else f"task {target}"

    # ------------------------------------------------------------------ model
    def _model_key_now(self) -> tuple[str, str]:
        return (self.model_path.text().strip() or "builtin", self._device())

    def load_model(self, then: Callable[[Any, Any], None] | None = None) -> None:
        """Load the model in the model field (in a job), then call ``then(model, meta)``."""
        key = self._model_key_now()
        if self._model is not None and (self._model_key == key or key[0] == SESSION_MODEL):
            if then is not None:
                then(self._model, self._meta)
            return
        if key[0] == SESSION_MODEL:
            self._error(DlcbError("no model was trained in this session: choose a model"))
            return
        if then is not None:
            self._pending.append(then)
        if self.jobs.busy("model"):
            return
        self.jobs.run(
            f"Loading model {key[0]}",
            core("napari_dlcb.inference.sequence:load_sequence_model"),
            key[0],
            device=key[1],
            kind="model",
            on_return=lambda loaded: self._on_model(key, *loaded),
            on_done=lambda job: self._pending.clear() if job.error or job.cancelled else None,
        )

    def _on_model(self, key: tuple[str, str], model: Any, meta: Any) -> None:
        from napari_dlcb.inference.sequence import describe_sequence_model

        self._model, self._meta, self._model_key = model, meta, key
        refill_combo(self.target, [str(c) for c in meta.classes], default=str(meta.classes[0]))
        info = describe_sequence_model(meta, key[0])
        self.model_info.setText(f"{info}. Device: {key[1]}.")
        self.status.setText(f"model: {info}")
        pending, self._pending = self._pending, []
        for then in pending:
            then(model, meta)

    def _model_label(self) -> str:
        source = (self._model_key or ("model",))[0]
        if source.startswith("builtin"):  # name the built-in and what it learnt from
            name = source.split(":", 1)[1] if ":" in source else "dna-multitask"
            data = "real ChIP-seq peaks" if name == "dna-encode" else "synthetic training data"
            return f"the built-in {name} DNA model ({data})"
        return source.replace("\\", "/").rstrip("/").split("/")[-1]

    def _with_model(self, then: Callable[[Any, Any, Any, str], None]) -> None:
        """Check the region shown, load the model, check again, then ``then(model, meta, region, seq)``."""
        try:
            self.shown()
        except DlcbError as err:
            self._error(err)
            return

        def go(model: Any, meta: Any) -> None:
            try:
                region, seq = self.shown()
            except DlcbError as err:
                self._error(err)
                return
            then(model, meta, region, seq)

        self.load_model(go)

    def _still_shown(self, region: Any) -> bool:
        """False (with a status line) when the view moved to another region meanwhile."""
        if self._region != region:
            self.status.setText(f"result for {region.locus} dropped: another region is shown")
            return False
        return True

    # ------------------------------------------------------------------ predict
    def start_predict(self) -> None:
        """Predicted tracks for every task along the region shown."""
        self._with_model(self._predict)

    def _predict(self, model: Any, meta: Any, region: Any, seq: str) -> None:
        window = int(meta.extra.get("length", 200))
        self.jobs.run(
            "Predicting tracks",
            core("napari_dlcb.inference.sequence:predict_track"),
            model,
            seq,
            window=window,
            step=max(1, len(seq) // 400),
            device=self._device(),
            meta=meta,
            kind="predict",
            replace=True,
            on_return=lambda res: self._on_pred(region, meta, *res),
        )

    def _on_pred(self, region: Any, meta: Any, centres: np.ndarray, prob: np.ndarray) -> None:
        from napari_dlcb.tasks.genome_layers import prediction_layers

        if not self._still_shown(region):
            return
        names = [str(c) for c in meta.classes]
        layers, track = prediction_layers(
            region,
            centres,
            prob,
            names,
            task_type=meta.extra.get("task_type", "binary"),
            model=self._model_label(),
        )
        self.browser.set_track(track, layers)
        top = ", ".join(f"{n} {prob[:, j].max():.2f}" for j, n in enumerate(names))
        self.status.setText(f"predicted {len(names)} tracks (max: {top})")

    # ------------------------------------------------------------------ mutation map
    def start_mutation_map(self) -> None:
        """The mutation map of the chosen task, the visible part first, in a job."""
        self._with_model(self._mutation_map)

    def _mutation_map(self, model: Any, meta: Any, region: Any, seq: str) -> None:
        target = max(0, self.target.currentIndex())
        task = self._task_name(meta, target)
        key = (self._model_key, id(model), str(region), target)
        if key in self._mm_cache:
            self._show_mm(region, self._mm_cache[key].copy(), task)
            self.status.setText(f"mutation map ({task}) from cache")
            return
        lo, hi = self.visible_span()
        blocks = viewport_first(lo, hi, len(region), block=64)
        self._show_mm(region, np.zeros((4, len(region)), np.float32), task)
        self.jobs.run(
            f"Mutation map ({task})",
            mutation_map_blocks,
            model,
            _one_hot(seq),
            blocks,
            target=target,
            device=self._device(),
            kind="mutation_map",
            replace=True,
            total=len(blocks),
            status=f"mutation map ({task}): the visible part first…",
            on_yield=lambda b: self._on_mm_block(region, key, b),
        )

    def _prepare_mm(self, region: Any) -> None:
        """Make the hidden mutation-map band of a new region.

        Computing a map later shows it without adding a layer (no event-loop
        stall), and no empty white band is shown before.
        """
        from napari_dlcb.tasks.genome_layers import mutation_map_layers

        layers, _ = mutation_map_layers(
            region, np.zeros((4, len(region)), np.float32), visible=False
        )
        layer = self.mm_layer
        if (
            layer is None
            or layer not in self.viewer.layers
            or not self.browser.update(layer, layers[0])
        ):
            self.mm_layer = self.browser.add_hidden(layers)[0]

    def _show_mm(self, region: Any, data: np.ndarray, task: str) -> Any:
        from napari_dlcb.tasks.genome_layers import mutation_map_layers

        layers, track = mutation_map_layers(region, data, task=task)
        layer = self.mm_layer
        if layer is not None and layer in self.viewer.layers and layer.data.shape == data.shape:
            layer.data = data
            layer.name = layers[0][1]["name"]
            layer.contrast_limits = layers[0][1]["contrast_limits"]
            self.browser.show_track(track)
        else:
            self.mm_layer = self.browser.set_track(track, layers)[0]
        return self.mm_layer

    def _on_mm_block(self, region: Any, key: tuple, b: MutationBlock) -> None:
        layer = self.mm_layer
        if layer is None or layer not in self.viewer.layers or self._region != region:
            return
        layer.data[:, b.start : b.end] = b.values
        complete = b.done == b.total
        # redraw at most every 100 ms (and at the end): blocks can arrive faster than frames
        now = time.perf_counter()
        if complete or now - self._last_mm_draw > 0.1:
            m = float(np.abs(layer.data).max()) or 1.0
            layer.contrast_limits = (-m, m)
            layer.refresh()
            self._last_mm_draw = now
        if complete:  # a stopped run is never cached
            self._mm_cache[key] = layer.data.copy()
        self.status.setText(
            f"mutation map: {b.done}/{b.total} blocks" + (" (complete)" if complete else "")
        )

    # ------------------------------------------------------------------ attribution
    def start_attribution(self) -> None:
        """Attribution of the chosen task (method from the combo) as a letter logo track."""
        self._with_model(self._attribution)

    def _attribution(self, model: Any, meta: Any, region: Any, seq: str) -> None:
        target = max(0, self.target.currentIndex())
        method, task = self.attr_method.currentText(), self._task_name(meta, target)
        self.jobs.run(
            f"Attribution ({method})",
            attribution_job,
            model,
            _one_hot(seq),
            region=region,
            task=task,
            target=target,
            method=method,
            device=self._device(),
            kind="attribution",
            replace=True,
            on_return=lambda res: self._on_attr(region, method, task, *res),
        )

    def _on_attr(
        self, region: Any, method: str, task: str, attr: Any, layers: list, track: Any
    ) -> None:
        if not self._still_shown(region):
            return
        values, delta = attr.map[0], float(attr.completeness[0])
        self.attr_layer = self.browser.set_track(track, layers)[0]
        total = float(values.sum())
        note = ""
        if abs(delta) > 0.05 * max(1.0, abs(total)):
            note = {
                "gradient x input": " (large: gradient x input is only a first-order estimate)",
                "DeepLIFT/SHAP": " (large: the model has layers DeepLIFT handles only"
                " approximately; prefer integrated gradients)",
            }.get(method, " (large: use more steps)")
        self.status.setText(
            f"{method} for {task}: completeness error (delta) {delta:+.2e}, "
            f"sum of attributions {total:+.3f}{note}"
        )

    # ------------------------------------------------------------------ variants
    def _on_variant_pick(self, event: Any = None) -> None:
        layer = self.browser.layer("variants")
        if layer is None or not layer.selected_data:
            return
        i = sorted(layer.selected_data)[0]
        self.score_variant(layer.features.iloc[i].to_dict())

    def score_variant(self, feat: dict) -> None:
        """Score one variant (``chrom, pos, id, ref, alt``) for every task; fill the table."""
        import pandas as pd

        v = pd.DataFrame([{**feat, "start": int(feat["pos"]) - 1, "kind": "snv"}])

        def go(model: Any, meta: Any, region: Any, seq: str) -> None:
            self.jobs.run(
                f"Scoring variant {feat.get('id', '')}",
                core("napari_dlcb.interpret.variants:score_variants"),
                model,
                self.files.genome,
                v,
                meta=meta,
                length=int(meta.extra.get("length", 200)),
                device=self._device(),
                kind="variant",
                replace=True,
                on_return=self._on_variant,
            )

        self._with_model(go)

    def _on_variant(self, table: Any) -> None:
        row = table.iloc[0]
        self.variant_table = table
        if row.status != "ok":
            self.effects.setRowCount(0)
            self.status.setText(f"{row.id}: not scored: {row.status}")
            return
        tasks = [c[4:] for c in table.columns if c.startswith("ref_")]
        self.effects.setRowCount(len(tasks))
        for k, t in enumerate(tasks):
            for j, val in enumerate(
                [t, f"{row['ref_' + t]:.3f}", f"{row['alt_' + t]:.3f}", f"{row['diff_' + t]:+.3f}"]
            ):
                self.effects.setItem(k, j, QTableWidgetItem(val))
        self.tabs.setCurrentIndex(self.tabs.indexOf(self.effects.parentWidget()))
        self.status.setText(f"{row.id}: {row.ref}>{row.alt} scored for {len(tasks)} tasks")

    # ------------------------------------------------------------------ training
    def start_training(self) -> None:
        """Train a DeepBind model on windows centred on the BED intervals, with a live curve."""
        from napari_dlcb.tasks.sequence_config import SequenceConfig

        try:
            self.shown()
            if self._bed is None:
                raise DlcbError("training needs a BED file of intervals (Files tab)")
            config = SequenceConfig(
                model_kwargs={"filters": 32, "kernel_size": 19},
                epochs=int(self.epochs.value()),
                batch_size=32,
                device=self._device(),
            ).validate()
        except DlcbError as err:
            self._error(err)
            return
        self.plot.reset()
        self._fold = ""  # "fold i/K, " while a k-fold member trains
        self.jobs.run(
            "Training",
            core("napari_dlcb.tasks.sequence:train_on_peaks", takes_stop=True),
            self.files.paths["fasta"],
            self.files.paths["bed"],
            config=config,
            window=200,
            outside="drop",
            kind="train",
            on_yield=self._on_train_event,
        )

    def _on_train_event(self, ev: Any) -> None:
        from napari_dlcb.inference.sequence import describe_sequence_model
        from napari_dlcb.training.events import EpochEnd, Finished, Warning

        if isinstance(ev, Warning) and ev.kind == "fold":  # k-fold: a new member's curves
            if " finished" not in ev.message and "stopped" not in ev.message:
                self.plot.reset()
                self._fold = ev.message.split(":")[0] + ", "
            self.status.setText(ev.message)
        elif isinstance(ev, EpochEnd):
            self.plot.add_epoch(ev.epoch, ev.train_loss, ev.val_loss, is_best=ev.is_best)
            auroc = ev.metrics.get("auroc", float("nan"))
            self.status.setText(
                f"{getattr(self, '_fold', '')}epoch {ev.epoch + 1}: val loss {ev.val_loss:.3f}, "
                f"AUROC {auroc:.3f}"
            )
        elif isinstance(ev, Finished):
            self.status.setText(f"training finished ({ev.reason}): {ev.kept}")
        elif hasattr(ev, "model") and hasattr(ev, "meta"):
            self._model, self._meta = ev.model, ev.meta
            self._model_key = (SESSION_MODEL, self._device())
            self.model_path.setText(SESSION_MODEL)
            refill_combo(
                self.target, [str(c) for c in ev.meta.classes], default=str(ev.meta.classes[0])
            )
            self.model_info.setText(describe_sequence_model(ev.meta, SESSION_MODEL))
            self._mm_cache.clear()
