"""One evaluation protocol, carried by every number (issue 14 §4).

A metric means something only together with how it was measured: which split and which samples (seeds or
frames), which views went in and which were scored, where the target masks came from, the background, the
resolution, and how many samples were averaged. `EvalProtocol` is that record; `Measured` is a value with
its protocol. Comparing two numbers whose protocols differ raises `ProtocolMismatch` naming every differing
field: a gate, not a warning. When a comparison across a field *is* the point (trained on its own training
samples vs on validation samples; the pipeline from 1 view vs GS-LRM from 6), name that field in `allow`.

    p = EvalProtocol(split="val", samples=["000003", "000007"], input_views=[0, 1, 2, 3, 4], scored_views=[5],
                     mask_source="02 preprocessed rig masks", background="white", resolution=64)
    a, b = Measured(18.2, p), Measured(17.9, p)
    a > b                                  # compared under one protocol
    assert_comparable(p, q, allow=["split", "samples"])   # raises unless only those fields differ

Protocols serialise to plain dicts (`to_dict` / `from_dict`); `workbook.record(name, value, protocol=p)`
carries one into the notebook output and the runner's summary.json (`notebooks.<nb>.protocols.<name>`
beside `notebooks.<nb>.metrics.<name>`); `measured_from_summary` reads a number back with its protocol.
This module imports nothing of the library (it sits at the bottom of the module map).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

PROTOCOL_FIELDS = ("split", "samples", "input_views", "scored_views", "mask_source", "background",
                   "resolution", "n", "extra")


def split_views(num_views: int, num_input_views: int, views: str = "held_out") -> tuple[list[int], list[int]]:
    """(input view ids, evaluated/supervised view ids) in the fixed view order.

    views: "held_out" = the views after the inputs, "input" = the inputs themselves, "all" = every view.
    """
    if not 0 < num_input_views <= num_views:
        raise ValueError(f"num_input_views must be in 1..{num_views}, got {num_input_views}")
    inputs = list(range(num_input_views))
    if views == "held_out":
        if num_input_views == num_views:
            raise ValueError(f"views='held_out' needs num_input_views < {num_views} (all views are inputs)")
        return inputs, list(range(num_input_views, num_views))
    if views == "input":
        return inputs, inputs
    if views == "all":
        return inputs, list(range(num_views))
    raise ValueError(f"views must be 'held_out', 'input' or 'all', got {views!r}")



class ProtocolMismatch(ValueError):
    """Numbers measured under different protocols were compared; the message names each differing field."""


def _views_text(views: Sequence[int]) -> str:
    """(0, 1, 2, 3, 4) -> '0-4'; (0, 2, 5) -> '0,2,5'; () -> '-'."""
    v = list(views)
    if not v:
        return "-"
    if len(v) > 2 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}-{v[-1]}"
    return ",".join(map(str, v))


@dataclass(frozen=True)
class EvalProtocol:
    """How a number was measured. Every field takes part in the comparison gate.

    split         which split the samples come from ("val", "train", "test", ...)
    samples       the seeds or frames scored (sample folder names, or seeds as text), in order
    input_views   view indices the predictor read
    scored_views  view indices the metric compared (empty for 3D metrics that score no image)
    mask_source   where the target masks/alpha came from (e.g. "02 preprocessed rig masks")
    background    the colour predictions and targets were composited over ("white", "black")
    resolution    square image size in pixels at which images were compared
    extra         further settings a number depends on ({"min_opacity": 0.05}), compared like the rest
    n             (derived) how many samples were averaged: len(samples)
    """

    split: str
    samples: tuple[str, ...]
    input_views: tuple[int, ...]
    scored_views: tuple[int, ...]
    mask_source: str
    background: str
    resolution: int
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.samples, (str, bytes)):
            raise TypeError(f"EvalProtocol.samples must be a sequence of sample names or seeds, got the string "
                            f"{self.samples!r} (wrap one sample in a list)")
        extra = self.extra.items() if isinstance(self.extra, Mapping) else self.extra
        object.__setattr__(self, "samples", tuple(str(s) for s in self.samples))
        object.__setattr__(self, "input_views", tuple(int(v) for v in self.input_views))
        object.__setattr__(self, "scored_views", tuple(int(v) for v in self.scored_views))
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "extra", tuple(sorted((str(k), v) for k, v in extra)))
        for name in ("split", "mask_source", "background"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"EvalProtocol.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not self.samples:
            raise ValueError("EvalProtocol.samples is empty: a number measured on no sample has no protocol")

    @property
    def n(self) -> int:
        return len(self.samples)

    # --- comparing ------------------------------------------------------------------------------------
    def differences(self, other: EvalProtocol) -> dict[str, tuple[Any, Any]]:
        """{field: (mine, other's)} for every field that differs (n included when the counts differ)."""
        if not isinstance(other, EvalProtocol):
            raise TypeError(f"differences: expected an EvalProtocol, got {type(other).__name__}")
        diff = {f.name: (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}
        if self.n != other.n:
            diff["n"] = (self.n, other.n)
        return dict(sorted(diff.items(), key=lambda kv: PROTOCOL_FIELDS.index(kv[0])))

    def replace(self, **changes: Any) -> EvalProtocol:
        """A copy with some fields changed (e.g. the same protocol on the training split)."""
        return EvalProtocol(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    # --- text -----------------------------------------------------------------------------------------
    def label(self, max_samples: int = 4, per_row: Iterable[str] = ()) -> str:
        """One line for captions and printed records: 'val n=2 (000003, 000007) · views 0-4 → 5 · masks: ...'.
        Fields named in `per_row` read '…' or are left out, and are listed at the end (a table's caption,
        where they have a column each)."""
        per_row = set(per_row) | ({"n"} if "samples" in set(per_row) else set())
        shown = ", ".join(self.samples[:max_samples]) + (", …" if self.n > max_samples else "")
        head = [text for f, text in (("split", self.split), ("n", f"n={self.n}"), ("samples", f"({shown})"))
                if f not in per_row]
        views = [text if f not in per_row else "…" for f, text in (("input_views", _views_text(self.input_views)),
                                                                   ("scored_views", _views_text(self.scored_views)))]
        tail = [text for f, text in (("mask_source", f"masks: {self.mask_source}"),
                                     ("background", f"{self.background} bg"), ("resolution", f"{self.resolution}²"))
                if f not in per_row]
        tail += [] if "extra" in per_row else [f"{k}={v}" for k, v in self.extra]
        parts = [" ".join(head)] if head else []
        parts += [f"views {views[0]} → {views[1]}", *tail]
        listed = [f for f in PROTOCOL_FIELDS if f in per_row]
        return " · ".join(parts + ([f"per row: {', '.join(listed)}"] if listed else []))

    # --- plain dicts (summary.json, record payloads) ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "samples": list(self.samples), "input_views": list(self.input_views),
                "scored_views": list(self.scored_views), "mask_source": self.mask_source,
                "background": self.background, "resolution": self.resolution, "n": self.n,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalProtocol:
        """Inverse of to_dict; unknown or missing keys, or an n that disagrees with the samples, are errors."""
        unknown = sorted(set(d) - set(PROTOCOL_FIELDS))
        missing = sorted(set(PROTOCOL_FIELDS) - {"n", "extra"} - set(d))
        if unknown or missing:
            raise ValueError(f"not an evaluation protocol: unknown keys {unknown}, missing keys {missing} "
                             f"(expected {list(PROTOCOL_FIELDS)})")
        p = cls(**{k: v for k, v in d.items() if k != "n"})
        if "n" in d and int(d["n"]) != p.n:
            raise ValueError(f"evaluation protocol says n={d['n']} but lists {p.n} samples: {list(p.samples)}")
        return p


def _protocol_of(x: EvalProtocol | Measured) -> EvalProtocol:
    if isinstance(x, Measured):
        return x.protocol
    if isinstance(x, EvalProtocol):
        return x
    raise TypeError(f"expected an EvalProtocol or a Measured value, got {type(x).__name__} (a bare number "
                    "carries no protocol: wrap it as Measured(value, protocol))")


def mismatch_message(diff: Mapping[str, tuple[Any, Any]], what: str = "") -> str:
    lines = [f"  {name}: {a!r} vs {b!r}" for name, a, b in ((k, *v) for k, v in diff.items())]
    return (f"{what + ': ' if what else ''}cannot compare numbers measured under different evaluation "
            f"protocols; they differ in {', '.join(diff)}:\n" + "\n".join(lines) +
            "\nMeasure both the same way, or pass allow=[...] naming the fields whose difference is the point "
            "of the comparison.")


def assert_comparable(*items: EvalProtocol | Measured, allow: Iterable[str] = (), what: str = "") -> EvalProtocol:
    """Raise ProtocolMismatch unless every protocol equals the first one, except in the fields of `allow`.

    `allow` may name any field of PROTOCOL_FIELDS ("samples" allows "n" too). Returns the first protocol.
    """
    allow = set(allow)
    unknown = sorted(allow - set(PROTOCOL_FIELDS))
    if unknown:
        raise ValueError(f"assert_comparable: allow names unknown fields {unknown}; fields are {list(PROTOCOL_FIELDS)}")
    if "samples" in allow:
        allow.add("n")
    if not items:
        raise ValueError("assert_comparable: nothing to compare")
    first = _protocol_of(items[0])
    for item in items[1:]:
        diff = {k: v for k, v in first.differences(_protocol_of(item)).items() if k not in allow}
        if diff:
            raise ProtocolMismatch(mismatch_message(diff, what))
    return first


@dataclass(frozen=True)
class Measured:
    """A number with its protocol. Ordering and subtraction pass the protocol gate first (no field allowed
    to differ); use `compare(a, b, allow=...)` for a deliberate comparison across a field."""

    value: float
    protocol: EvalProtocol

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, EvalProtocol):
            raise TypeError(f"Measured.protocol must be an EvalProtocol, got {type(self.protocol).__name__}")
        object.__setattr__(self, "value", float(self.value))

    def __float__(self) -> float:
        return self.value

    def _other(self, other: Measured) -> float:
        if not isinstance(other, Measured):
            raise TypeError(f"cannot compare a Measured value with a bare {type(other).__name__}: it carries no "
                            "protocol (wrap it as Measured(value, protocol))")
        assert_comparable(self, other)
        return other.value

    def __lt__(self, other: Measured) -> bool:
        return self.value < self._other(other)

    def __le__(self, other: Measured) -> bool:
        return self.value <= self._other(other)

    def __gt__(self, other: Measured) -> bool:
        return self.value > self._other(other)

    def __ge__(self, other: Measured) -> bool:
        return self.value >= self._other(other)

    def __sub__(self, other: Measured) -> float:
        return self.value - self._other(other)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "protocol": self.protocol.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measured:
        return cls(d["value"], EvalProtocol.from_dict(d["protocol"]))


def compare(a: Measured, b: Measured, allow: Iterable[str] = (), what: str = "") -> float:
    """a - b, after the gate: raises ProtocolMismatch naming every differing field not in `allow`."""
    assert_comparable(a, b, allow=allow, what=what)
    return a.value - b.value


# --- tables -------------------------------------------------------------------------------------------
def _short(value: Any, max_items: int = 3) -> Any:
    """A table cell for a protocol field: tuples of samples/views as short text, pairs as k=v."""
    if not isinstance(value, tuple):
        return value
    if value and isinstance(value[0], tuple):
        return ", ".join(f"{k}={v}" for k, v in value)
    if value and isinstance(value[0], int):
        return _views_text(value)
    return ", ".join(value[:max_items]) + (", …" if len(value) > max_items else "")


def protocol_table(rows: Mapping[str, Mapping[str, Any]], protocols: Mapping[str, EvalProtocol],
                   allow: Iterable[str] = (), what: str = "metrics table"):
    """A metrics table (one row per name of `rows`) that carries its protocol.

    Every row's protocol passes the gate against the first row's, except in the fields of `allow`; those
    fields get a column each (so the difference shows beside the numbers), and the shared protocol (the
    first row's label, differing fields marked "per row") is in `table.attrs["protocol"]` for the caption.
    Returns a pandas DataFrame.
    """
    import pandas as pd

    missing = [name for name in rows if name not in protocols]
    if missing:
        raise ValueError(f"{what}: rows {missing} have no protocol; every number carries one")
    names = list(rows)
    assert_comparable(*(protocols[n] for n in names), allow=allow, what=what)
    table = pd.DataFrame({n: dict(rows[n]) for n in names}).T
    differing = {k for n in names[1:] for k in protocols[names[0]].differences(protocols[n])}
    for field_name in [f for f in PROTOCOL_FIELDS if f in differing]:
        table[field_name] = [_short(getattr(protocols[n], field_name)) for n in names]
    table.attrs["protocol"] = protocols[names[0]].label(per_row=differing)
    return table


# --- summary.json ---------------------------------------------------------------------------------------
def measured_from_summary(summary: Mapping[str, Any] | str | Path, notebook: str, name: str) -> Measured:
    """The number `name` recorded by `notebook` in a runner summary.json (a dict or its path), with its protocol.

    Raises KeyError naming what is missing; a number recorded without a protocol is an error here."""
    if not isinstance(summary, Mapping):
        summary = json.loads(Path(summary).read_text())
    entry = summary.get("notebooks", {}).get(notebook)
    if entry is None:
        raise KeyError(f"summary.json has no notebook {notebook!r}; it has {sorted(summary.get('notebooks', {}))}")
    if name not in entry.get("metrics", {}):
        raise KeyError(f"{notebook} recorded no {name!r} in summary.json; it has {sorted(entry.get('metrics', {}))}")
    proto = entry.get("protocols", {}).get(name)
    if proto is None:
        raise KeyError(f"{notebook}'s {name!r} was recorded without a protocol (record(name, value, protocol=...)), "
                       "so it cannot be compared")
    return Measured(entry["metrics"][name], EvalProtocol.from_dict(proto))
