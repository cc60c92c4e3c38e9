"""The merge-method registry: each entry carries its hyper-parameters, key needs and paper.

A ``MergeMethod`` is the method's function plus what a caller (``merge``, the command line, a
config file) needs to use it without knowing the method: every hyper-parameter with its type,
default, range or choices and a one-line help, whether it draws random numbers (then ``merge``
takes ``seed=<int>`` or ``key=<PRNG key>``), and the paper it implements. ``describe()`` lists
them as plain dicts (what ``jaxrec merge --list`` prints).

Example::

    spec = METHODS.get("ties")          # a MergeMethod, callable like the function
    spec.defaults()                     # {"density": 0.2, "scale": 1.0, "granularity": "model"}
    static, key = spec.resolve({"density": 0.3})   # validated hyper-parameters
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxrec.registry import Registry

_INF = float("inf")


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyper-parameter: ``kind`` is float, int or str; numbers may have an interval,
    strings a set of choices. ``low_open``/``high_open`` make the interval's ends exclusive."""

    name: str
    default: Any
    help: str
    kind: type = float
    low: float = -_INF
    high: float = _INF
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def interval(self) -> str | None:
        """The numeric range, e.g. "(0, 1]"; None for choices or an unbounded number."""
        if self.choices is not None or (self.low == -_INF and self.high == _INF):
            return None
        fmt = lambda v: "inf" if v == _INF else "-inf" if v == -_INF else f"{v:g}"
        lo = "(" if self.low_open or self.low == -_INF else "["
        hi = ")" if self.high_open or self.high == _INF else "]"
        return f"{lo}{fmt(self.low)}, {fmt(self.high)}{hi}"

    def allowed(self) -> str:
        """The allowed values in words, e.g. "a number in (0, 1]" or "one of 'model', 'tensor'"."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = "an int" if self.kind is int else "a number"
        rng = self.interval()
        return f"{what} in {rng}" if rng else f"a finite {what[2:].strip()}"

    def check(self, value: Any) -> bool:
        if self.choices is not None:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        v = float(value)
        if not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.kind.__name__, "default": self.default}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        else:
            out["range"] = self.interval()
        out["help"] = self.help
        return out


def density(default: float, help: str = "fraction of entries kept per task") -> HParam:
    return HParam("density", default, help, low=0.0, high=1.0, low_open=True)


def scale(default: float, help: str = "multiplier of the merged task vector") -> HParam:
    return HParam("scale", default, help)


SEED = HParam("seed", 0, "PRNG seed (or pass key=jax.random.key(...))", kind=int, low=0)


@dataclasses.dataclass(frozen=True)
class MergeMethod:
    """A registered merge method; calling it calls ``fn(base, stacked_tvs, **hparams)``."""

    name: str
    fn: Callable[..., Any]
    hparams: tuple[HParam, ...]
    paper: str
    url: str
    needs_key: bool = False

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def summary(self) -> str:
        """First line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0].strip() if self.fn.__doc__ else ""

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hparams}

    def resolve(self, hparams: Mapping[str, Any]) -> tuple[dict[str, Any], jax.Array | None]:
        """Validate ``hparams`` and split them into static ones and the PRNG key.

        Returns ``(static, key)``: ``static`` holds the given hyper-parameters (defaults are
        left to the function), ``key`` is ``key=`` or ``jax.random.key(seed)`` for a method
        that needs one (seed defaults to 0), else None.

        Raises:
          ValueError: naming the method, the offending key or value and what is allowed.
        """
        hparams = dict(hparams)
        known = {h.name: h for h in self.hparams}
        allowed = sorted(known) + (["key"] if self.needs_key else [])
        bad = sorted(set(hparams) - set(allowed))
        if bad:
            raise ValueError(
                f"merge method {self.name!r}: unknown hyper-parameter(s) {bad}; "
                f"allowed: {allowed or 'none'}"
            )
        for name, value in hparams.items():
            if name != "key" and not known[name].check(value):
                raise ValueError(
                    f"merge method {self.name!r}: {name} must be {known[name].allowed()}, "
                    f"got {value!r}"
                )
        key = None
        if self.needs_key:
            if "key" in hparams and "seed" in hparams:
                raise ValueError(f"merge method {self.name!r}: pass seed or key, not both")
            key = hparams.pop("key", None)
            seed = hparams.pop("seed", None)
            if key is None:
                key = jax.random.key(SEED.default if seed is None else seed)
        return hparams, key

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "hparams": [h.describe() for h in self.hparams],
            "needs_key": self.needs_key,
            "paper": {"title": self.paper, "url": self.url},
        }


class MethodRegistry(Registry[MergeMethod]):
    """``Registry`` of ``MergeMethod`` entries; ``lookup`` raises ``ValueError`` for bad names."""

    def lookup(self, name: str) -> MergeMethod:
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"unknown merge method {name!r}; known: {', '.join(self.names())}")
        return self.get(name)


METHODS: MethodRegistry = MethodRegistry("merge method")


def register(
    name: str,
    *,
    paper: str,
    url: str,
    hparams: Sequence[HParam] = (),
    needs_key: bool = False,
):
    """Decorator: register ``fn`` under ``name`` with its hyper-parameters and paper.

    The function itself is returned unchanged (so it stays a plain, jit-able function).
    """

    def deco(fn):
        METHODS.register(name)(
            MergeMethod(name, fn, tuple(hparams), paper=paper, url=url, needs_key=needs_key)
        )
        return fn

    return deco


def describe(method: str | None = None) -> list[dict[str, Any]]:
    """Plain-dict descriptions of the registered methods (or of one), sorted by name.

    Each dict has ``name``, ``summary`` (one line), ``hparams`` (list of ``{name, type,
    default, range or choices, help}``), ``needs_key`` and ``paper`` (``{title, url}``).
    """
    names = METHODS.names() if method is None else (METHODS.lookup(method).name,)
    return [METHODS.get(n).describe() for n in names]
