"""nbval, as `make test` runs it on the committed notebooks, must fail on a broken notebook: a cell that
raises, or a `# NBVAL_CHECK_OUTPUT` cell whose output no longer matches the committed one. A control
notebook that still matches must pass, so the failures come from the breakage and not from the setup."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

SANITIZE = Path(__file__).parent / "nbval_sanitize.cfg"


def _notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """A notebook whose code cells hold `source` with the committed stdout `committed`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for n, (source, committed) in enumerate(cells, 1):
        cell = nbformat.v4.new_code_cell(source, execution_count=n)
        if committed:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed)]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def _nbval(notebook: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", str(notebook), "--sanitize-with",
                           str(SANITIZE), "-p", "no:cacheprovider", "-q", "--rootdir", str(notebook.parent)],
                          cwd=notebook.parent, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_nbval_fails_on_a_broken_cell_and_on_changed_checked_output(tmp_path):
    good = [("x = 6 * 7", ""), ("# NBVAL_CHECK_OUTPUT\nprint(x)", "42\n")]
    control = _nbval(_notebook(tmp_path / "control.ipynb", good))
    assert control.returncode == 0, control.stdout + control.stderr

    raising = _nbval(_notebook(tmp_path / "raising.ipynb", [good[0], ("raise RuntimeError('broken cell')", ""), good[1]]))
    assert raising.returncode != 0 and "broken cell" in raising.stdout, raising.stdout

    changed = _nbval(_notebook(tmp_path / "changed.ipynb", [("x = 6 * 8", ""), good[1]]))
    assert changed.returncode != 0 and "48" in changed.stdout, changed.stdout
