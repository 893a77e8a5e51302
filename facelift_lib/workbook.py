"""Notebook machinery: record() of key numbers, and the profile runner behind `python -m facelift_lib`.

A profile (params/*.yaml) holds run-level keys (`profile`, `out_dir`, `seed`), shared keys offered to
every notebook, and optional per-notebook sections keyed by notebook name (`05_gslrm: {max_steps: 2000}`).
The runner syncs the jupytext pairs, executes notebooks/NN_*.ipynb in NN order with papermill
(kernel cwd = notebooks/), injects only the parameters each notebook declares, and writes
<out>/<name>.ipynb, <out>/<name>.html and <out>/summary.json (rewritten after every notebook).
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .locks import FolderLock, atomic_write_bytes
from .protocol import EvalProtocol, Measured, ProtocolMismatch, mismatch_message

RECORD_MIMETYPE = "application/vnd.facelift.record+json"
WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
NOTEBOOK_NAME = re.compile(r"^\d{2}_\w+$")  # 00_data, 05_gslrm, ...
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


# --- notebook side ------------------------------------------------------------------------------
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


def record(name: str, value: Any, digits: int = 4, protocol: EvalProtocol | None = None) -> None:
    """Show `name = value` and mark it for summary.json (the runner reads it from the executed notebook).

    A metric carries its evaluation protocol: pass `protocol=`, or a `protocol.Measured` value (which brings
    its own). The protocol is shown after the value and travels into summary.json beside the number.
    Returns nothing, so a notebook's last `record(...)` leaves no stray echo of the value."""
    from IPython.display import display

    if isinstance(value, Measured):
        if protocol is not None and protocol != value.protocol:
            raise ProtocolMismatch(f"record({name!r}): the Measured value brings its own protocol and protocol= "
                                   "names another one; pass only one\n" +
                                   mismatch_message(value.protocol.differences(protocol)))
        value, protocol = value.value, value.protocol
    if protocol is not None and not isinstance(protocol, EvalProtocol):
        raise TypeError(f"record({name!r}): protocol must be a facelift_lib.protocol.EvalProtocol, "
                        f"got {type(protocol).__name__}")
    value = _jsonable(value)
    shown = round(value, digits) if isinstance(value, float) else value
    payload = {"name": name, "value": value}
    text = f"{name} = {shown}"
    if protocol is not None:
        payload["protocol"] = protocol.to_dict()
        text += f"  [{protocol.label()}]"
    display({"text/plain": text, RECORD_MIMETYPE: payload}, raw=True)


def rounded(x: Any, digits: int = 2) -> Any:
    """x (a number, or a sequence/array/tensor of numbers) as Python floats rounded to `digits`, for the
    printed `# NBVAL_CHECK_OUTPUT` cells; -0.0 becomes 0.0 so float noise around zero cannot flip a sign."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [rounded(v, digits) for v in x]
    return round(float(x), digits) + 0.0


def require(notebook: str, needs: dict[str | Path, str]) -> None:
    """Stop `notebook` when an input an earlier notebook writes is missing: `needs` maps each path (file or
    folder) to the notebook that writes it. FileNotFoundError listing every missing path with the notebook
    to run first. Paths the library checks itself (checkpoints of a run folder: `training.checkpoint_file`;
    the rig: `synthetic_rig.workbook_rig`) need no entry here."""
    missing = [f"{path} (run {producer} first)" for path, producer in needs.items() if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"{notebook} needs what earlier notebooks write; missing: " + "; ".join(missing))


# --- profiles -------------------------------------------------------------------------------------
class UnknownParameterWarning(UserWarning):
    """A profile key that the notebook(s) it is meant for do not declare; it is not injected."""


class NotebookFailed(RuntimeError):
    """A notebook raised during a run; the message names the notebook, the cell and the executed copy."""


@dataclass
class Profile:
    name: str
    out_dir: Path                                  # absolute
    shared: dict[str, Any] = field(default_factory=dict)   # offered to every notebook (seed, size, ...)
    cell_timeout_s: float | None = None            # a cell running longer fails the run (None: no limit)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # per notebook name
    source: str = "<dict>"


def load_profile(path: str | Path, out_dir: str | Path | None = None) -> Profile:
    """Read a profile YAML; `out_dir` (or the profile's, default outputs/<profile>) is resolved against the cwd."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"profile not found: {path} (profiles live in params/, e.g. params/smoke.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # the message says line and column
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())}); fix the place it names "
                         "(indentation, a missing ':' or an unclosed quote)") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile is a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    name = str(data.pop("profile", path.stem))
    out = Path(out_dir if out_dir is not None else data.pop("out_dir", f"outputs/{name}")).resolve()
    data.pop("out_dir", None)
    timeout = data.pop("cell_timeout_s", None)
    sections: dict[str, dict[str, Any]] = {}
    for key in [k for k in data if NOTEBOOK_NAME.match(str(k))]:
        if not isinstance(data[key], dict):
            raise ValueError(f"{path}: '{key}' looks like a notebook section but is not a mapping "
                             f"(write `{key}: {{param: value}}`)")
        sections[key] = data.pop(key)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"{path}: cell_timeout_s must be a positive number of seconds (e.g. `cell_timeout_s: 600`) "
                         f"or absent for no limit, got {timeout!r}")
    return Profile(name=name, out_dir=out, shared=data, sections=sections,
                   cell_timeout_s=None if timeout is None else float(timeout), source=str(path))


def check_profile_types(profile: Profile, defaults: dict[str, dict[str, str]]) -> None:
    """Refuse a profile value whose type cannot stand for the notebook's default: a string where the parameters
    cell has a number or a bool (`max_steps: "40"`), a float or bool where it has an int. One ValueError lists
    them all, naming the profile, the notebook and the key. `defaults`: {notebook: {param: default source}}."""
    problems = []
    for name, params in defaults.items():
        section = profile.sections.get(name, {})
        for key, value in {**profile.shared, **section}.items():
            if key not in params:
                continue
            try:
                default = ast.literal_eval(params[key])
            except (ValueError, SyntaxError):
                continue  # an expression: no type to compare with
            want = _number_kind(default)
            if want is None or value is None or _fits(value, want):  # null: "none/no limit" where a notebook allows
                continue
            where = f"section {name}: " if key in section else f"(shared key, used by {name}) "
            problems.append(f"{where}{key} = {value!r} ({type(value).__name__}), but {name} expects {want} "
                            f"(its default is {params[key]})" + ("; write the number without quotes"
                                                                  if isinstance(value, str) else ""))
    if problems:
        raise ValueError(f"{profile.source}: " + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))


def _number_kind(default: Any) -> str | None:
    if isinstance(default, bool):
        return "a bool (true/false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    return None


def _fits(value: Any, want: str) -> bool:
    if want.startswith("a bool"):
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if want == "an integer" else True


# --- notebooks ------------------------------------------------------------------------------------
def discover_notebooks(notebooks_dir: str | Path = DEFAULT_NOTEBOOKS_DIR,
                       only: Sequence[str] | None = None) -> list[Path]:
    """The jupytext sources notebooks/NN_*.py in NN order; `only` keeps names (or their NN prefixes)."""
    notebooks_dir = Path(notebooks_dir)
    sources = sorted(p for p in notebooks_dir.glob("*.py") if NOTEBOOK_NAME.match(p.stem))
    if not sources:
        raise FileNotFoundError(f"no notebooks NN_name.py in {notebooks_dir}")
    if not only:
        return sources
    picked = [p for p in sources if p.stem in only or p.stem.split("_")[0] in only]
    found = {p.stem for p in picked} | {p.stem.split("_")[0] for p in picked}
    missing = [n for n in only if n not in found]
    if missing:
        raise ValueError(f"--only {missing}: no such notebook in {notebooks_dir}; "
                         f"have {[p.stem for p in sources]}")
    return picked


def sync_notebooks(sources: Sequence[Path]) -> list[Path]:
    """`jupytext --sync` each pair (the newer of .py/.ipynb wins; the .ipynb keeps its outputs)."""
    from jupytext.cli import jupytext

    for src in sources:
        strip_run_metadata(Path(src).with_suffix(".ipynb"))
    if sources:
        jupytext(["--sync", "--quiet", *map(str, sources)])
    return [Path(p).with_suffix(".ipynb") for p in sources]


def strip_run_metadata(notebook: Path) -> None:
    """Drop papermill/nbclient timings, saved widget state and widget views from a paired .ipynb (if it exists).

    They change on every run (nbclient even keeps a previous run's widget state when the new run has
    none), and when the .ipynb is the newer file jupytext would copy the cell timings into the .py.
    A notebook saved from a live JupyterLab session holds views of widgets whose models died with the
    kernel: reopened, each reads "Error displaying widget: model not found" (`drop_widget_views`).
    """
    import nbformat

    if not notebook.is_file():
        return
    nb = nbformat.read(notebook, as_version=4)
    found = nb.metadata.pop("papermill", None) is not None
    found |= drop_widget_views(nb)
    for cell in nb.cells:
        found |= cell.metadata.pop("papermill", None) is not None
        found |= cell.metadata.pop("execution", None) is not None
    if found:
        nbformat.write(nb, notebook)


def drop_widget_views(nb: Any) -> bool:
    """Remove widget-view outputs (application/vnd.jupyter.widget-view+json) and the saved widget state
    (metadata.widgets) from a notebook node, in place; returns whether anything was removed.

    A widget view only displays while its kernel-side model lives; saved, it reopens as "Error displaying
    widget: model not found". The notebooks' widgets (viz.browser) are for live sessions only."""
    found = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        kept = [o for o in outputs if WIDGET_VIEW_MIMETYPE not in o.get("data", {})]
        if len(kept) != len(outputs):
            cell.outputs, found = kept, True
    return found


def jupyterlab_numbers(value: Any) -> Any:
    """`value` (JSON-like) with every integral float as an int, as JupyterLab saves it.

    JupyterLab holds outputs as JavaScript objects and saves them through JSON.stringify, which writes 1.0
    as `1`; Python's json writes `1.0`. Without this, opening an executed notebook in JupyterLab rewrites
    every integral float of a plotly figure (its template's colour scales), a record, ... and the file is
    dirty at once. Non-integral floats, exponents included, already read back the same."""
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, dict):
        return type(value)((k, jupyterlab_numbers(v)) for k, v in value.items())
    if isinstance(value, list):
        return [jupyterlab_numbers(v) for v in value]
    return value


def drop_empty_stderr(nb: Any) -> bool:
    """Remove stderr outputs that show nothing (after carriage returns): the last state of a progress bar
    that cleared itself (tqdm's leave=False writes '\\r<spaces>\\r'), a lone newline; JupyterLab draws each
    as an empty pink box. A trailing blank line of a kept stderr output goes too. In place; returns whether
    anything changed."""
    found = False
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                head, _, last = out.text.rpartition("\n")
                if last.strip() == "" and last:
                    out.text, found = (head + "\n" if head else ""), True
                if not out.text.strip():
                    found = True
                    continue
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept
    return found


def notebook_parameters(notebook: str | Path) -> dict[str, str]:
    """{name: default source text} of the `parameters` cell of a notebook (.py source or .ipynb).

    Parsed with `ast` (papermill's line-based inspector drops a parameter whose comment holds an '=').
    {} when the notebook has no parameters cell.
    """
    import jupytext

    nb = jupytext.read(notebook)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise ValueError(f"{notebook}: the parameters cell is not valid Python ({exc}); it may only assign "
                         "default values") from exc
    params = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and node.value is not None:
                params[target.id] = ast.get_source_segment(cell.source, node.value)
    return params


def collect_records(nb: Any) -> dict[str, Any]:
    """{name: value} of every record() output in an executed notebook (a later record of a name wins)."""
    metrics: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(RECORD_MIMETYPE)
            if rec is not None:
                metrics[rec["name"]] = rec["value"]
    return metrics


def collect_protocols(nb: Any) -> dict[str, dict[str, Any]]:
    """{name: protocol dict} of every record() output that carried a protocol (a later record of a name wins;
    a later record without a protocol drops the earlier one's). summary.json keeps it beside the metrics."""
    protocols: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(RECORD_MIMETYPE)
            if rec is None:
                continue
            protocols.pop(rec["name"], None)
            if rec.get("protocol") is not None:
                protocols[rec["name"]] = rec["protocol"]
    return protocols


def notebook_inputs(profile: Profile, name: str, declared: Sequence[str]) -> dict[str, Any]:
    """Parameters for one notebook: out_dir (absolute), shared keys and its section, only those it declares.

    A section key the notebook does not declare is a typo or a stale key: it is reported and not
    injected (papermill would otherwise define it silently in the notebook).
    """
    section = profile.sections.get(name, {})
    unknown = [k for k in section if k not in declared]
    if unknown:
        warnings.warn(f"{profile.source}: {name} does not declare {unknown} in its parameters cell; not injected",
                      UnknownParameterWarning, stacklevel=2)
    offered = {"out_dir": str(profile.out_dir), **profile.shared, **section}
    return {k: v for k, v in offered.items() if k in declared}


def check_profile_keys(profile: Profile, declared: dict[str, Sequence[str]]) -> None:
    """Warn about shared keys no notebook declares and sections that name no notebook."""
    anywhere = {k for keys in declared.values() for k in keys}
    unused = [k for k in profile.shared if k not in anywhere]
    if unused:
        warnings.warn(f"{profile.source}: keys {unused} are declared by no notebook; not injected",
                      UnknownParameterWarning, stacklevel=2)
    for name in profile.sections:
        if name not in declared:
            warnings.warn(f"{profile.source}: section '{name}' names no notebook; ignored",
                          UnknownParameterWarning, stacklevel=2)


def execute_notebook(src: Path, dst: Path, parameters: dict[str, Any] | None, cwd: Path,
                     html: bool = True, cell_timeout_s: float | None = None) -> Any:
    """Run `src` with papermill into `dst` (kernel from its kernelspec, cwd `cwd`); `html`: a .html copy too.

    Returns the executed notebook. Raises NotebookFailed naming the notebook and the failing cell;
    the executed copy (with the traceback) and its HTML are written first.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = src.stem
    error: Exception | None = None
    try:
        papermill.execute_notebook(str(src), str(dst), parameters=parameters, cwd=str(cwd),
                                   progress_bar={"desc": name, "leave": False}, log_output=False,
                                   execution_timeout=cell_timeout_s)
    except Exception as exc:  # noqa: BLE001 - re-raised below as NotebookFailed, after writing the HTML
        error = exc
    nb = coalesce_streams(dst) if dst.is_file() else None
    if html and nb is not None:
        write_html(nb, dst.with_suffix(".html"))
    if error is None:
        return nb
    if isinstance(error, PapermillExecutionError):
        first = next((ln for ln in error.source.splitlines() if ln.strip()), "<empty>")
        where = f"cell {error.cell_index} of the executed copy (In [{error.exec_count}]: `{first.strip()}`)"
        what = f"{error.ename}: {error.evalue}"
    else:  # kernel death, a cell timeout (its message shows the cell), ...
        where, what = "the kernel or the client", f"{type(error).__name__}: {str(error).strip()}"
    raise NotebookFailed(f"notebook {name} failed at {where}: {what}\n"
                         f"  executed copy with the traceback: {dst}") from error


def coalesce_streams(notebook: Path) -> Any:
    """Write an executed .ipynb as JupyterLab would show and save it; returns the notebook as written.

    Consecutive stream outputs of a cell are merged and their carriage returns resolved: a progress bar
    reaches the notebook as one output per refresh (1,200 for 05's training loop); JupyterLab shows only
    its last state, so that is what the file keeps. Stderr outputs left empty go (`drop_empty_stderr`),
    and so do widget views (`drop_widget_views`); JSON outputs get JupyterLab's number format
    (`jupyterlab_numbers`), so opening the notebook does not dirty it.
    """
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(notebook, as_version=4)
    CoalesceStreamsPreprocessor().preprocess(nb, {})
    if drop_empty_stderr(nb):  # outputs either side of a dropped one may now be neighbours
        CoalesceStreamsPreprocessor().preprocess(nb, {})
    drop_widget_views(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "data" in out:
                out["data"] = jupyterlab_numbers(out["data"])
    nbformat.write(nb, notebook)
    return nb


def write_html(nb: Any, path: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return path


def write_summary(summary: dict[str, Any], path: Path) -> None:
    # atomic, through a unique temp name: a crash never leaves half a summary, two writers never share a temp
    atomic_write_bytes(path, json.dumps(summary, indent=1, default=str).encode())


# --- runs -----------------------------------------------------------------------------------------
def _earlier_entries(path: Path, profile_name: str, rerun: Sequence[str]) -> dict[str, Any]:
    """Notebook entries of an earlier summary.json of the same profile, except those about to re-run."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if earlier.get("profile") != profile_name:
        return {}
    return {n: e for n, e in earlier.get("notebooks", {}).items() if n not in rerun}


def run_profile(profile: Profile, notebooks_dir: str | Path = DEFAULT_NOTEBOOKS_DIR,
                only: Sequence[str] | None = None) -> dict[str, Any]:
    """Execute the notebooks for a profile into profile.out_dir; returns the summary (also summary.json).

    Stops at the first failing notebook with NotebookFailed (summary.json then says which). The output folder
    has one writer: a second run into it fails at once (`locks.FolderLockedError` naming the folder and the
    PID of the run that holds it). A previous run that died (kill -9, power loss) is said on stderr and kept
    in summary.json as "previous_run".
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    # Only the notebooks that run are synced (others may be open in an editor); every notebook's
    # declared parameters count for the unknown-key check, read from the .py sources.
    selected = [p.stem for p in sync_notebooks(discover_notebooks(notebooks_dir, only))]
    defaults = {p.stem: notebook_parameters(p) for p in discover_notebooks(notebooks_dir)}
    declared = {name: list(params) for name, params in defaults.items()}
    check_profile_keys(profile, declared)
    check_profile_types(profile, {n: defaults[n] for n in selected})
    with FolderLock(profile.out_dir, f"profile run '{profile.name}'"):
        return _run_locked(profile, notebooks_dir, only, selected, declared)


def previous_run_died(summary_path: Path) -> dict[str, Any] | None:
    """{"pid", "notebook"} when summary.json says "running" but its run is gone (call it holding the folder's lock:
    then no live run writes there), else None."""
    try:
        earlier = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(earlier, dict) or earlier.get("status") != "running":
        return None
    running = [n for n, e in earlier.get("notebooks", {}).items()
               if isinstance(e, dict) and e.get("status") == "running"]
    return {"pid": earlier.get("pid"), "notebook": running[0] if running else None}


def _run_locked(profile: Profile, notebooks_dir: Path, only: Sequence[str] | None, selected: list[str],
                declared: dict[str, list[str]]) -> dict[str, Any]:
    """run_profile's work, holding the output folder's lock."""
    from tqdm import tqdm

    out = profile.out_dir
    died = previous_run_died(out / "summary.json")
    if died is not None:
        print(f"note: the previous run into {out} (process {died['pid']}) died while running "
              f"{died['notebook'] or 'a notebook'}: summary.json still said 'running'. Its outputs of that notebook "
              "may be incomplete; this run redoes the notebooks it runs.", file=sys.stderr)
    # --only re-runs some notebooks of a run: the others' entries (and their numbers) stay in summary.json
    kept = _earlier_entries(out / "summary.json", profile.name, selected) if only else {}
    for entry in kept.values():
        if died is not None and entry.get("status") in ("running", "pending"):
            entry["status"] = "died" if entry["status"] == "running" else "not run"
    summary: dict[str, Any] = {
        "profile": profile.name, "out_dir": str(out), "status": "running", "total_seconds": 0.0, "pid": os.getpid(),
        **({"previous_run": {"status": "died", **died}} if died is not None else {}),
        "notebooks": dict(sorted({**kept, **{n: {"status": "pending", "seconds": None, "metrics": {}}
                                             for n in selected}}.items())),
    }
    write_summary(summary, out / "summary.json")
    start = time.perf_counter()
    bar = tqdm(selected, desc=f"profile {profile.name}", unit="notebook")
    for name in bar:
        bar.set_postfix_str(name)
        params = notebook_inputs(profile, name, declared[name])
        entry = summary["notebooks"][name]
        entry["status"] = "running"
        write_summary(summary, out / "summary.json")
        t0 = time.perf_counter()
        try:
            nb = execute_notebook(notebooks_dir / f"{name}.ipynb", out / f"{name}.ipynb", params, notebooks_dir,
                                  cell_timeout_s=profile.cell_timeout_s)
        except BaseException as exc:  # a failed cell, or Ctrl-C: summary.json says so, then re-raise
            status = "failed" if isinstance(exc, NotebookFailed) else "interrupted"
            entry.update(status=status, seconds=round(time.perf_counter() - t0, 2), error=str(exc) or repr(exc))
            summary.update(status=status, total_seconds=round(time.perf_counter() - start, 2))
            write_summary(summary, out / "summary.json")
            bar.close()
            raise
        entry.update(status="ok", seconds=round(time.perf_counter() - t0, 2), metrics=collect_records(nb),
                     protocols=collect_protocols(nb))
        summary["total_seconds"] = round(time.perf_counter() - start, 2)
        write_summary(summary, out / "summary.json")
    bar.close()
    summary["status"] = "ok"
    write_summary(summary, out / "summary.json")
    return summary


def execute_in_place(notebooks_dir: str | Path = DEFAULT_NOTEBOOKS_DIR,
                     only: Sequence[str] | None = None) -> list[Path]:
    """Re-execute notebooks/NN.ipynb in place with their defaults (the committed outputs nbval compares)."""
    from tqdm import tqdm

    notebooks_dir = Path(notebooks_dir).resolve()
    sources = discover_notebooks(notebooks_dir, only)
    done = []
    for src, nb in zip(sources, tqdm(sync_notebooks(sources), desc="notebooks", unit="notebook")):
        try:
            execute_notebook(nb, nb, None, notebooks_dir, html=False)
        finally:
            strip_run_metadata(nb)
            os.utime(src)  # the .py stays the newer file: the next --sync reads inputs from it
        done.append(nb)
    return done
