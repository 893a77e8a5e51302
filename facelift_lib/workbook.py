"""Notebook-side helpers: record() of key numbers (collected by the profile runner into summary.json)."""
from __future__ import annotations

import json
import math
from typing import Any

RECORD_MIMETYPE = "application/vnd.facelift.record+json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def record(name: str, value: Any, digits: int = 4) -> Any:
    """Show `name = value` and mark it for summary.json (the runner reads it from the executed notebook)."""
    from IPython.display import display

    value = _jsonable(value)
    shown = round(value, digits) if isinstance(value, float) else value
    display({"text/plain": f"{name} = {shown}", RECORD_MIMETYPE: {"name": name, "value": value}}, raw=True)
    return value
