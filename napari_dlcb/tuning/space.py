"""Search spaces: which hyper-parameters a study varies, over which ranges.

A :class:`SearchSpace` is a set of :class:`Param` (float, int or categorical),
each naming a field of the task's config dataclass. The defaults per task
follow the paper's Table 2 (learning rate on a log scale, batch size, filter
length and number, dropout, batch norm, weight decay, augmentation strength)
plus the architecture knobs that matter. Users fix or widen any of them on the
command line::

    --param lr=1e-5:1e-1:log      # a float range on a log scale
    --param batch_size=16,32,64   # a categorical
    --param filters=16:128:int    # an integer range
    --fix dropout=0.2             # hold one at a value

Parameters marked ``important`` are searched first, one at a time, by the
``line-random`` strategy (the paper's protocol).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = ["Param", "SearchSpace", "parse_fixed", "parse_param"]


def _number(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise DlcbError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DlcbError(f"not a finite number: {text!r}")
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return _number(text)
    except DlcbError:
        return text.strip()


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: a config field and its range or choices.

    Examples
    --------
    >>> Param.float("lr", 1e-4, 1e-2, log=True).grid(3)
    [0.0001, 0.001, 0.01]
    """

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    important: bool = False
    help: str = field(default="", compare=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def float(cls, name: str, low: float, high: float, *, log: bool = False, **kw: Any) -> Param:
        """A float range (log-uniform with ``log``)."""
        return cls(name, "float", float(low), float(high), log, **kw).checked()

    @classmethod
    def int(cls, name: str, low: int, high: int, *, log: bool = False, **kw: Any) -> Param:
        """An integer range."""
        return cls(name, "int", int(low), int(high), log, **kw).checked()

    @classmethod
    def categorical(cls, name: str, choices: Iterable[Any], **kw: Any) -> Param:
        """One of a list of values."""
        return cls(name, "categorical", choices=tuple(choices), **kw).checked()

    def checked(self) -> Param:
        """Self, if its range makes sense; else a one-line error."""
        if self.kind == "categorical":
            if not self.choices:
                raise DlcbError(f"hyper-parameter {self.name!r} has no choices")
            return self
        if self.low is None or self.high is None or not self.low <= self.high:
            raise DlcbError(f"hyper-parameter {self.name!r}: low must be <= high")
        if self.log and self.low <= 0:
            raise DlcbError(f"hyper-parameter {self.name!r}: a log range must be > 0")
        return self

    # ------------------------------------------------------------------ optuna
    def distribution(self) -> Any:
        """The optuna distribution of this parameter."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    @property
    def fixed(self) -> bool:
        """Whether only one value is possible."""
        if self.kind == "categorical":
            return len(self.choices) == 1
        return self.low == self.high

    def grid(self, n: int) -> list[Any]:
        """``n`` evenly spread values (log-spaced on a log scale); all choices."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.fixed or n <= 1:
            return [self.low if n <= 1 else self.low]
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        vals = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
        vals = [math.exp(v) if self.log else v for v in vals]
        if self.kind == "int":
            return sorted({int(round(v)) for v in vals})
        return [float(f"{v:.3g}") for v in vals]

    def narrowed(self, best: Any, factor: float = 3.0) -> Param:
        """A range around ``best`` (x/÷ ``factor`` on a log scale), inside the original."""
        if self.kind == "categorical" or self.fixed:
            return self
        if self.log:
            lo, hi = best / factor, best * factor
        else:
            span = (self.high - self.low) / factor
            lo, hi = best - span / 2, best + span / 2
        lo, hi = max(lo, self.low), min(hi, self.high)
        if self.kind == "int":
            lo, hi = int(math.floor(lo)), int(math.ceil(hi))
        return replace(self, low=lo, high=max(hi, lo))

    def describe(self) -> str:
        """A short text: ``lr: 1e-05..0.1 (log)``."""
        if self.kind == "categorical":
            return f"{self.name}: {{{', '.join(str(c) for c in self.choices)}}}"
        scale = " (log)" if self.log else ""
        return f"{self.name}: {self.low:g}..{self.high:g}{scale}"


def parse_param(text: str) -> Param:
    """Parse ``name=low:high[:log|:int]`` or ``name=a,b,c`` (see the module docstring).

    Examples
    --------
    >>> parse_param("lr=1e-5:1e-1:log").describe()
    'lr: 1e-05..0.1 (log)'
    >>> parse_param("batch_size=16,32").choices
    (16, 32)
    """
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not spec.strip():
        raise DlcbError(
            f"a search range looks like name=low:high[:log] or name=a,b,c, got {text!r}"
        )
    if ":" in spec:
        parts = [p.strip() for p in spec.split(":")]
        flags = {p.lower() for p in parts[2:]}
        unknown = flags - {"log", "int"}
        if len(parts) < 2 or unknown:
            raise DlcbError(f"cannot read the range {text!r}: use low:high, low:high:log or :int")
        low, high = _number(parts[0]), _number(parts[1])
        if "int" in flags or (
            isinstance(low, int) and isinstance(high, int) and "log" not in flags
        ):
            return Param.int(name, int(low), int(high), log="log" in flags)
        return Param.float(name, float(low), float(high), log="log" in flags)
    return Param.categorical(name, [_value(v) for v in spec.split(",") if v.strip()])


def parse_fixed(text: str) -> tuple[str, Any]:
    """Parse ``name=value`` (a hyper-parameter held at one value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise DlcbError(f"a fixed hyper-parameter looks like name=value, got {text!r}")
    return name.strip(), _value(value)


class SearchSpace:
    """The hyper-parameters a study varies (an ordered mapping name -> :class:`Param`).

    Parameters
    ----------
    params : iterable of Param
        The ranges.
    fixed : mapping, optional
        Values held constant in every trial (they do not count as searched).
    """

    def __init__(self, params: Iterable[Param], fixed: Mapping[str, Any] | None = None):
        self.params: dict[str, Param] = {}
        for p in params:
            self.params[p.name] = p
        self.fixed: dict[str, Any] = dict(fixed or {})

    def __len__(self) -> int:
        return len(self.searched)

    def __iter__(self):
        return iter(self.searched.values())

    @property
    def searched(self) -> dict[str, Param]:
        """Parameters that vary (not fixed, more than one value)."""
        return {n: p for n, p in self.params.items() if n not in self.fixed and not p.fixed}

    @property
    def important(self) -> list[Param]:
        """Searched parameters marked important, in order (line search first)."""
        return [p for p in self.searched.values() if p.important]

    def with_changes(
        self, ranges: Iterable[Param] = (), fixed: Mapping[str, Any] | None = None
    ) -> SearchSpace:
        """A copy with some ranges replaced or added and some values fixed."""
        params = dict(self.params)
        for p in ranges:
            old = params.get(p.name)
            params[p.name] = replace(p, important=old.important if old else p.important)
        return SearchSpace(params.values(), {**self.fixed, **dict(fixed or {})})

    def check(self, known: Iterable[str]) -> SearchSpace:
        """Refuse names that are not options of the task, and an empty space."""
        names = set(known)
        for n in list(self.params) + list(self.fixed):
            if n not in names:
                raise DlcbError(
                    f"unknown hyper-parameter {n!r}; this task knows: {', '.join(sorted(names))}"
                )
        if not self.searched:
            raise DlcbError("the search space is empty: every hyper-parameter is fixed")
        return self

    def distributions(self, overrides: Mapping[str, Param] | None = None) -> dict[str, Any]:
        """Optuna distributions of the searched parameters (``overrides`` narrow some)."""
        out = {}
        for name, p in self.searched.items():
            out[name] = (overrides or {}).get(name, p).distribution()
        return out

    def describe(self) -> list[str]:
        """One line per parameter (for logs and the GUI)."""
        lines = [p.describe() for p in self.searched.values()]
        lines += [f"{k} = {v} (fixed)" for k, v in self.fixed.items()]
        return lines
