"""The profile runner on two throwaway notebooks (3 kernel starts in all)."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

from facelift_lib import workbook
from facelift_lib.__main__ import main

HEADER = """\
# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""

NB_A = HEADER + textwrap.dedent('''
    # %% [markdown]
    # # A

    # %% tags=["parameters"]
    out_dir = "../outputs/smoke"
    seed = 0
    alpha = 1.0

    # %%
    from facelift_lib.workbook import record
    record("alpha_sq", alpha ** 2)
    print(f"alpha is {alpha}, out_dir is {out_dir}")

    # %%
    import sys, time
    for i in range(5):  # a progress bar: one stream output per refresh while the kernel runs
        sys.stderr.write(f"\\rstep {i + 1}/5")
        sys.stderr.flush()
        time.sleep(0.05)
    print(file=sys.stderr)
''')

NB_B = HEADER + textwrap.dedent('''
    # %% tags=["parameters"]
    out_dir = "../outputs/smoke"
    fail = False

    # %%
    check_fail = fail  # the cell that fails
    assert not check_fail, "asked to fail"

    # %%
    print("after the failure")
''')


@pytest.fixture()
def notebooks(tmp_path: Path) -> Path:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    (nb_dir / "00_a.py").write_text(NB_A)
    (nb_dir / "01_b.py").write_text(NB_B)
    return nb_dir


def write_profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_load_profile_splits_run_shared_and_sections(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prof = workbook.load_profile(write_profile(tmp_path, """
        profile: t
        out_dir: out/t
        seed: 3
        size: 64
        cell_timeout_s: 600
        05_gslrm: {steps: 7}
    """))
    assert prof.name == "t" and prof.out_dir == (tmp_path / "out/t").resolve() and prof.cell_timeout_s == 600.0
    assert prof.shared == {"seed": 3, "size": 64}
    assert prof.sections == {"05_gslrm": {"steps": 7}}
    assert workbook.load_profile(tmp_path / "profile.yaml", out_dir="elsewhere").out_dir == tmp_path / "elsewhere"
    with pytest.raises(ValueError, match="05_gslrm"):
        workbook.load_profile(write_profile(tmp_path, "05_gslrm: 3\n"))


def test_discover_orders_and_filters(notebooks):
    assert [p.stem for p in workbook.discover_notebooks(notebooks)] == ["00_a", "01_b"]
    assert [p.stem for p in workbook.discover_notebooks(notebooks, ["01_b"])] == ["01_b"]
    assert [p.stem for p in workbook.discover_notebooks(notebooks, ["00"])] == ["00_a"]
    with pytest.raises(ValueError, match="02_c"):
        workbook.discover_notebooks(notebooks, ["02_c"])


def test_notebook_inputs_keeps_declared_keys_only():
    prof = workbook.Profile(name="t", out_dir=Path("/abs/out"), shared={"seed": 1, "nobody": 2},
                            sections={"00_a": {"alpha": 3.0, "typo": 4}, "09_gone": {"x": 1}})
    with pytest.warns(workbook.UnknownParameterWarning, match="typo"):
        got = workbook.notebook_inputs(prof, "00_a", ["out_dir", "seed", "alpha"])
    assert got == {"out_dir": "/abs/out", "seed": 1, "alpha": 3.0}
    with pytest.warns(workbook.UnknownParameterWarning) as caught:
        workbook.check_profile_keys(prof, {"00_a": ["out_dir", "seed", "alpha"], "01_b": ["out_dir"]})
    messages = " ".join(str(w.message) for w in caught)
    assert "nobody" in messages and "09_gone" in messages and "seed" not in messages


def test_run_writes_outputs_injects_declared_parameters_and_filters(tmp_path, notebooks):
    profile = write_profile(tmp_path, f"""
        profile: t
        out_dir: {tmp_path / 'out'}
        seed: 5
        not_a_parameter: 1
        00_a: {{alpha: 3.0, typo_key: 5}}
    """)
    with pytest.warns(workbook.UnknownParameterWarning):
        summary = workbook.run_profile(workbook.load_profile(profile), notebooks, only=["00_a"])
    out = tmp_path / "out"
    assert (out / "00_a.ipynb").is_file() and (out / "00_a.html").is_file()
    assert not (out / "01_b.ipynb").exists()  # --only: neither run
    assert not (notebooks / "01_b.ipynb").exists()  # nor synced
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert list(summary["notebooks"]) == ["00_a"] and summary["status"] == "ok"
    assert summary["notebooks"]["00_a"]["status"] == "ok"
    assert summary["notebooks"]["00_a"]["metrics"] == {"alpha_sq": 9.0}
    nb = nbformat.read(out / "00_a.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "alpha = 3.0" in injected.source and "seed = 5" in injected.source
    assert f'out_dir = "{out}"' in injected.source  # absolute
    assert "typo_key" not in injected.source and "not_a_parameter" not in injected.source
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"alpha is 3.0, out_dir is {out}" in printed
    bar = next(c for c in nb.cells if "sys.stderr" in c.source)  # the bar's refreshes kept as its last state
    assert [(o.output_type, o.get("name"), o.get("text")) for o in bar.outputs] == [("stream", "stderr", "step 5/5\n")]
    assert "alpha_sq" in (out / "00_a.html").read_text()
    # re-running another notebook alone keeps 00_a's entry and numbers in summary.json
    with pytest.warns(workbook.UnknownParameterWarning):  # the same profile, the same typo
        again = workbook.run_profile(workbook.load_profile(profile), notebooks, only=["01_b"])
    assert list(again["notebooks"]) == ["00_a", "01_b"]
    assert again["notebooks"]["00_a"] == summary["notebooks"]["00_a"]
    assert again["notebooks"]["01_b"]["status"] == "ok"


def test_failing_cell_stops_the_run_and_keeps_outputs(tmp_path, notebooks, capsys):
    out = tmp_path / "out"
    profile = write_profile(tmp_path, f"""
        profile: t
        out_dir: {out}
        01_b: {{fail: true}}
    """)
    code = main(["run", str(profile), "--notebooks-dir", str(notebooks)])
    assert code != 0
    err = capsys.readouterr().err
    assert "01_b" in err and "cell" in err and "check_fail = fail" in err and "asked to fail" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["notebooks"]["00_a"]["status"] == "ok"
    assert summary["notebooks"]["00_a"]["metrics"] == {"alpha_sq": 1.0}  # defaults: alpha = 1.0
    assert summary["notebooks"]["01_b"]["status"] == "failed"
    for name in ("00_a", "01_b"):
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file()
    failed = nbformat.read(out / "01_b.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in failed.cells for o in c.get("outputs", []))


def test_collect_records_reads_the_record_mimetype():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={workbook.RECORD_MIMETYPE: {"name": "x", "value": 1}}),
        nbformat.v4.new_output("stream", name="stdout", text="noise"),
        nbformat.v4.new_output("display_data", data={workbook.RECORD_MIMETYPE: {"name": "x", "value": 2},
                                                     "text/plain": "x = 2"}),
    ]
    nb.cells.append(cell)
    assert workbook.collect_records(nb) == {"x": 2}


def test_sync_keeps_run_metadata_out_of_the_py(notebooks):
    src = notebooks / "00_a.py"
    ipynb, = workbook.sync_notebooks([src])
    canonical = src.read_text()  # jupytext adds its text_representation block to the header once
    nb = nbformat.read(ipynb, as_version=4)
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for cell in nb.cells:
        cell.metadata["papermill"] = {"duration": 0.5, "status": "completed"}
    nbformat.write(nb, ipynb)
    newer = src.stat().st_mtime + 10
    os.utime(ipynb, (newer, newer))  # as after `papermill X.ipynb X.ipynb`: the ipynb is the newer file
    workbook.sync_notebooks([src])
    assert src.read_text() == canonical and "papermill" not in canonical
    synced = nbformat.read(ipynb, as_version=4)
    assert all("papermill" not in c.metadata for c in synced.cells) and "widgets" not in synced.metadata


def test_require_names_every_missing_input_and_the_notebook_writing_it(tmp_path):
    (tmp_path / "rig").mkdir()
    (tmp_path / "train.txt").write_text("")
    workbook.require("06_reconstruct", {tmp_path / "rig": "00_data", tmp_path / "train.txt": "02_preprocessing"})
    with pytest.raises(FileNotFoundError, match=r"^06_reconstruct needs .*missing: .*val.txt \(run 03_mvdiffusion "
                                                r"first\); .*gslrm \(run 05_gslrm first\)$"):
        workbook.require("06_reconstruct", {tmp_path / "train.txt": "02_preprocessing",
                                            tmp_path / "val.txt": "03_mvdiffusion", tmp_path / "gslrm": "05_gslrm"})


def test_rounded_numbers_for_nbval_cells():
    import numpy as np
    import torch

    assert workbook.rounded(-1e-12, 1) == 0.0 and str(workbook.rounded(-1e-12, 1)) == "0.0"
    assert workbook.rounded(np.array([1.23456, -0.00001]), 3) == [1.235, 0.0]
    assert workbook.rounded(torch.tensor([2.5551]), 2) == [2.56]
    assert workbook.rounded(np.float32(0.1), 3) == 0.1


def test_notebook_parameters_from_the_py_source(notebooks):
    assert workbook.notebook_parameters(notebooks / "00_a.py") == {"out_dir": '"../outputs/smoke"', "seed": "0",
                                                                   "alpha": "1.0"}
    src = notebooks / "02_c.py"
    src.write_text(HEADER + textwrap.dedent('''
        # %% tags=["parameters"]
        scale = 0.25      # image size = 1152x1024 x scale (an '=' in a comment)
        model = {"d": 128, "layers": 4}  # {} = full size
        steps: int = 10
    '''))
    assert workbook.notebook_parameters(src) == {"scale": "0.25", "model": '{"d": 128, "layers": 4}', "steps": "10"}


def test_shipped_notebooks_parameters_read_the_same_in_papermill(caplog):
    """papermill's own inspector (`papermill --help-notebook`, and a warning on every run) drops a parameter
    whose comment holds an '='; the shipped notebooks' comments must not."""
    from papermill.translators import PythonTranslator

    for source in workbook.discover_notebooks():
        ours = workbook.notebook_parameters(source)
        assert ours, f"{source.name} has no parameters cell"
        cell = next(c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
        caplog.clear()
        theirs = {p.name for p in PythonTranslator.inspect(cell)}
        assert theirs == set(ours) and "Unable to parse" not in caplog.text, (source.name, set(ours) - theirs)


@pytest.mark.parametrize("profile", ["params/smoke.yaml", "params/full.yaml"])
def test_shipped_profiles_name_only_parameters_the_notebooks_declare(profile):
    root = Path(__file__).resolve().parents[1]
    loaded = workbook.load_profile(root / profile)
    declared = {p.stem: list(workbook.notebook_parameters(p)) for p in workbook.discover_notebooks()}
    assert set(loaded.sections) <= set(declared), set(loaded.sections) - set(declared)
    for name, section in loaded.sections.items():
        assert set(section) <= set(declared[name]), (name, set(section) - set(declared[name]))
    assert all(any(k in keys for keys in declared.values()) for k in loaded.shared), loaded.shared


# --- JupyterLab: what it shows and what it saves (issue 11 §6) ----------------------------------------------
def _stream(name: str, text: str):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_coalesce_streams_drops_empty_progress_bars_and_widget_views(tmp_path):
    """tqdm(leave=False) clears its bar with '\\r<spaces>\\r' and a closing bar writes a lone '\\n' to stderr:
    JupyterLab draws each as an empty pink box. Widget views reopen as 'model not found'."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("work()")
    cell.outputs = [
        _stream("stderr", "evaluate:  50%|#####     | 1/2\r"), _stream("stderr", "evaluate: 100%|##########| 2/2\r"),
        _stream("stderr", "                                   \r"),           # the cleared bar
        _stream("stdout", "result 1\n"),
        _stream("stderr", "\n"),                                               # a closing bar's newline
        _stream("stdout", "\n"),                                               # print(): kept (not pink)
        nbformat.v4.new_output("display_data", data={WIDGET: {"model_id": "abc", "version_major": 2},
                                                     "text/plain": "VBox(...)"}),
        _stream("stderr", "warning: something\n        \r"),                  # a real message, then a cleared bar
    ]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    written = workbook.coalesce_streams(path)
    assert written == nbformat.read(path, as_version=4)
    outs = [(o.output_type, o.get("name"), o.get("text")) for o in written.cells[0].outputs]
    assert outs == [("stream", "stdout", "result 1\n\n"), ("stream", "stderr", "warning: something\n")]
    assert "widgets" not in written.metadata


WIDGET = workbook.WIDGET_VIEW_MIMETYPE


def test_strip_run_metadata_drops_widget_views_of_a_saved_live_session(notebooks):
    src = notebooks / "00_a.py"
    ipynb, = workbook.sync_notebooks([src])
    nb = nbformat.read(ipynb, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("display_data", data={WIDGET: {"model_id": "m"}, "text/plain": "IntSlider"}),
                    _stream("stdout", "kept\n")]
    nbformat.write(nb, ipynb)
    workbook.strip_run_metadata(ipynb)
    cell = next(c for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code")
    assert [o.output_type for o in cell.outputs] == ["stream"]


def test_jupyterlab_numbers_match_json_stringify():
    """What JSON.stringify writes, read back by Python: integral floats are ints, the rest unchanged."""
    data = {"colorscale": [[0.0, "#0d0887"], [0.5, "#7e03a8"], [1.0, "#f0f921"]], "height": 500, "x": -0.0,
            "big": 1e21, "small": 1e-07, "nan": "NaN", "nested": {"value": 9.0, "flag": True}}
    got = workbook.jupyterlab_numbers(data)
    assert got == {"colorscale": [[0, "#0d0887"], [0.5, "#7e03a8"], [1, "#f0f921"]], "height": 500, "x": 0,
                   "big": 1e21, "small": 1e-07, "nan": "NaN", "nested": {"value": 9, "flag": True}}
    assert json.dumps(got["colorscale"]) == "[[0, \"#0d0887\"], [0.5, \"#7e03a8\"], [1, \"#f0f921\"]]"
    assert type(got["nested"]["value"]) is int and got["nested"]["flag"] is True and type(got["big"]) is float


def _installed_kernelspec() -> dict:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return {"display_name": spec.display_name, "language": spec.language, "name": "python3"}


def test_notebook_sources_name_the_kernelspec_jupyterlab_writes():
    """JupyterLab rewrites the kernelspec to the installed one on open ('Python 3' -> 'Python 3 (ipykernel)');
    the .py headers (which sync into the .ipynb) carry exactly that, so opening changes nothing."""
    spec = _installed_kernelspec()
    assert spec["display_name"] == "Python 3 (ipykernel)"
    for src in workbook.discover_notebooks():
        assert jupytext.read(src).metadata["kernelspec"] == spec, src.name


def test_committed_notebooks_are_what_jupyterlab_saves():
    """Opening a committed notebook in JupyterLab and saving it must change nothing: the same kernelspec, JSON
    numbers as JSON.stringify writes them, no widget views, no empty stderr boxes. (Fails until the notebooks
    are re-executed with the current workbook: `make notebooks`.)"""
    spec = _installed_kernelspec()
    for src in workbook.discover_notebooks():
        path = src.with_suffix(".ipynb")
        assert path.is_file(), f"{path.name} is not committed: make notebooks"
        text = path.read_text()
        nb = nbformat.reads(text, as_version=4)
        assert nb.metadata.get("kernelspec") == spec, (path.name, nb.metadata.get("kernelspec"))
        saved = nbformat.reads(text, as_version=4)
        for cell in saved.cells:
            for out in cell.get("outputs", []):
                if "data" in out:
                    out["data"] = workbook.jupyterlab_numbers(out["data"])
        assert not workbook.drop_widget_views(saved) and not workbook.drop_empty_stderr(saved), path.name
        assert nbformat.writes(saved) + "\n" == text, f"{path.name}: JupyterLab would rewrite its JSON numbers"


# --- issue 12: one writer per output folder, a dead run is said, profile values are checked where they enter ---
HOLDER = "from facelift_lib.locks import FolderLock; import sys, time; FolderLock(sys.argv[1], 'a test holder').acquire(); " \
         "print('locked', flush=True); time.sleep(120)"


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_it_and_the_pid(tmp_path, notebooks, capsys):
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        profile = write_profile(tmp_path, f"profile: t\nout_dir: {out}\n")
        code = main(["run", str(profile), "--notebooks-dir", str(notebooks)])
        err = capsys.readouterr().err
        assert code == 1 and str(out) in err and f"process {holder.pid}" in err
        assert not (out / "summary.json").exists() and not (out / "00_a.ipynb").exists()  # nothing was touched
    finally:
        holder.kill()
        holder.wait()


def test_a_run_that_died_is_seen_and_said_and_its_stale_lock_taken_over(tmp_path, capsys):
    import subprocess
    import sys

    from facelift_lib.locks import LOCK_NAME, FolderLock

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead, "what": "profile run 't'"}))  # left by kill -9
    (out / "summary.json").write_text(json.dumps({"profile": "t", "status": "running", "pid": dead, "notebooks": {
        "00_a": {"status": "ok"}, "01_b": {"status": "running"}}}))
    with FolderLock(out, "test") as lock:
        assert lock.stale_pid == dead
        assert workbook.previous_run_died(out / "summary.json") == {"pid": dead, "notebook": "01_b"}
    err = capsys.readouterr().err
    assert f"process {dead}" in err and "taking it over" in err


@pytest.mark.slow
def test_after_kill_9_of_the_runner_the_next_run_says_the_previous_one_died(tmp_path, notebooks):
    import signal
    import subprocess
    import sys
    import time

    (notebooks / "01_b.py").write_text(NB_B.replace("fail = False", "fail = False\nnap = 0.0") + "\nimport time\ntime.sleep(nap)\n")
    out = tmp_path / "out"
    profile = write_profile(tmp_path, f"profile: t\nout_dir: {out}\n01_b: {{nap: 60}}\n")
    runner = subprocess.Popen([sys.executable, "-m", "facelift_lib", "run", str(profile), "--only", "01_b",
                               "--notebooks-dir", str(notebooks)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # until the notebook runs (kernel started), at most ~60 s
            summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
            if summary.get("notebooks", {}).get("01_b", {}).get("status") == "running":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the runner never started 01_b")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert json.loads((out / "summary.json").read_text())["status"] == "running"  # what kill -9 leaves
    quick = write_profile(tmp_path, f"profile: t\nout_dir: {out}\n")
    done = subprocess.run([sys.executable, "-m", "facelift_lib", "run", str(quick), "--only", "00_a",
                           "--notebooks-dir", str(notebooks)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"previous run into {out} (process {runner.pid}) died while running 01_b" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["previous_run"] == {"status": "died", "pid": runner.pid, "notebook": "01_b"}
    assert summary["notebooks"]["01_b"]["status"] == "died" and summary["status"] == "ok"


def test_read_only_out_is_an_error_naming_the_folder(tmp_path, notebooks, capsys, monkeypatch):
    import errno

    from facelift_lib import locks

    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).startswith(str(tmp_path / "ro")) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **kw)
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(locks.os, "open", read_only)
    profile = write_profile(tmp_path, "profile: t\n")
    code = main(["run", str(profile), "--out", str(tmp_path / "ro"), "--notebooks-dir", str(notebooks)])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "ro") in err and "not writable" in err


@pytest.mark.parametrize("text, needles", [
    ("profile: t\n00_a: {alpha: 1\n", ["profile.yaml: not valid YAML", "line"]),
    ("profile: t\ncell_timeout_s: ten minutes\n", ["cell_timeout_s must be a positive number", "'ten minutes'"]),
])
def test_malformed_profiles_name_the_file_and_key(tmp_path, notebooks, capsys, text, needles):
    code = main(["run", str(write_profile(tmp_path, text)), "--out", str(tmp_path / "out"),
                 "--notebooks-dir", str(notebooks)])
    err = capsys.readouterr().err
    assert code == 1 and all(n in err for n in needles), err
    assert not (tmp_path / "out").exists()


def test_a_string_where_a_notebook_takes_a_number_is_refused_before_any_run(tmp_path, notebooks, capsys):
    (notebooks / "00_a.py").write_text(NB_A.replace("alpha = 1.0", "alpha = 1.0\nmax_steps = 40"))
    profile = write_profile(tmp_path, f"profile: t\nout_dir: {tmp_path / 'out'}\nseed: '3'\n00_a: {{max_steps: '40'}}\n")
    code = main(["run", str(profile), "--notebooks-dir", str(notebooks)])
    err = capsys.readouterr().err
    assert code == 1
    assert "section 00_a: max_steps = '40' (str), but 00_a expects an integer" in err
    assert "seed = '3' (str)" in err and "without quotes" in err
    assert not (tmp_path / "out").exists()


def test_write_summary_uses_a_unique_temp_name(tmp_path):
    (tmp_path / "summary.json.tmp").mkdir()  # what another run's fixed temp name would collide with
    workbook.write_summary({"status": "ok"}, tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir() if p.name != "summary.json.tmp"] == ["summary.json"]
