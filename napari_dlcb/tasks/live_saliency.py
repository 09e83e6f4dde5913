"""Live per-cell saliency while a classifier trains: the request and the budgeted view.

:class:`LiveCellSaliency` says which cell to explain (and how);
:func:`check_request` checks one against a task's cells and classes; and
:func:`live_view` turns "explain this request" into an engine preview that
runs only when its :class:`~napari_dlcb.tasks.base.LiveBudget` allows and
reports a request that cannot be explained once, as one line, without ending
the training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import LiveBudget

__all__ = ["LiveCellSaliency", "SaliencyRequest", "check_request", "live_view"]


@dataclasses.dataclass(frozen=True)
class LiveCellSaliency:
    """Which cell to explain live while training (``fit(preview_saliency=...)``).

    Parameters
    ----------
    object_id : int
        Label of the object whose crop is explained.
    method : str
        A method of :data:`napari_dlcb.interpret.common.METHODS`.
    target : int or str, optional
        Class index or name to explain; None explains the class the current
        weights predict for that cell.

    Examples
    --------
    >>> LiveCellSaliency.of(7)
    LiveCellSaliency(object_id=7, method='integrated-gradients', target=None)
    """

    object_id: int
    method: str = "integrated-gradients"
    target: int | str | None = None

    @classmethod
    def of(cls, request: Any) -> LiveCellSaliency:
        """``request`` as a :class:`LiveCellSaliency` (an int is an object id)."""
        if isinstance(request, LiveCellSaliency):
            return request
        if isinstance(request, (bool, np.bool_)) or not isinstance(request, (int, np.integer)):
            raise DlcbError(
                f"preview_saliency must be a LiveCellSaliency or an object id, not {request!r}"
            )
        return cls(int(request))


#: a live-saliency request: the cell (and method and class), or just its object id
SaliencyRequest = LiveCellSaliency | int


def check_request(
    request: SaliencyRequest, ids: np.ndarray, classes: Sequence[str]
) -> LiveCellSaliency:
    """``request`` as a :class:`LiveCellSaliency`, checked against the cells and classes.

    Raises
    ------
    DlcbError
        One line naming the unknown cell, method or class.

    Examples
    --------
    >>> check_request(3, np.array([1, 3]), ["a", "b"]).object_id
    3
    """
    from napari_dlcb.interpret.common import METHODS

    request = LiveCellSaliency.of(request)
    if not np.any(np.asarray(ids) == int(request.object_id)):
        raise DlcbError(f"object {request.object_id} is not in the labels layer")
    if request.method not in METHODS:
        raise DlcbError(
            f"unknown saliency method {request.method!r}; choose one of {', '.join(METHODS)}"
        )
    t = request.target
    if isinstance(t, str) and t not in classes:
        raise DlcbError(f"target class {t!r} does not exist; classes are: {', '.join(classes)}")
    if t is not None and not isinstance(t, str) and not 0 <= int(t) < len(classes):
        raise DlcbError(f"target class {t} does not exist: the model has {len(classes)} classes")
    return request


def live_view(
    explain: Callable[[Any], dict[str, Any]],
    get: Callable[[], Any],
    budget: LiveBudget,
) -> Callable[[], dict[str, Any]]:
    """An engine preview ``f() -> dict`` that explains ``get()`` within ``budget``.

    Parameters
    ----------
    explain : callable
        ``explain(request) -> dict`` of preview items.
    get : callable
        The current request, or None for no map (asked at every preview).
    budget : LiveBudget
        The view's share of the training time.

    Returns
    -------
    callable
        ``{}`` when there is no request or the budget does not allow a run;
        ``{"saliency_error": one line}`` once for a request that fails
        (``DlcbError`` or ``RuntimeError``); that request is not tried again.
    """
    failed: set[str] = set()

    def live() -> dict[str, Any]:
        req = get()
        if req is None or not budget.due() or repr(req) in failed:
            return {}
        try:
            with budget.spend():
                return explain(req)
        except (DlcbError, RuntimeError) as err:  # e.g. a method this model can't take
            # an optional view must not end the training: say so once per request
            failed.add(repr(req))
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            what = getattr(req, "method", "integrated-gradients")
            oid = getattr(req, "object_id", req)
            return {"saliency_error": f"live {what} saliency of cell {oid} is unavailable: {msg}"}

    return live
