"""Open every committed notebook in a real JupyterLab, in headless Chromium, and check that it feels native.

    .venv/bin/pip install -c constraints.txt jupyterlab      # once
    apt-get install chromium                                 # Debian/Ubuntu (any Chromium/Chrome on PATH)
    .venv/bin/python tests/manual/check_jupyterlab.py        # all notebooks; or name some: 00_data 05_gslrm

Works on a copy of notebooks/ (the repository is not touched). For each notebook it double-click-opens the
jupytext source `notebooks/NN_name.py` (JupyterLab's default viewer, from jupyter/lab-settings), waits for the
outputs and the kernel, saves, and checks:
  opened as a notebook (not the text editor) · not dirty after opening · no "Error displaying widget" ·
  no empty stderr box · plotly figures rendered where the notebook has them · saving leaves .ipynb and .py
  byte for byte as committed.
Prints one JSON line per notebook and exits 1 if any check fails. Not part of `make test`: it needs
JupyterLab and a browser, which CI does not install.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "check-jupyterlab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> bytes:
    end = time.time() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read()
        except Exception:  # noqa: BLE001 - not up yet
            if time.time() > end:
                raise TimeoutError(f"nothing answered at {url} within {seconds:.0f} s")
            time.sleep(0.3)


PAGE_REPORT = """(() => {
  const stderr = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
  return {notebook: !!document.querySelector('.jp-NotebookPanel'), text_editor: !!document.querySelector('.jp-FileEditor'),
          dirty: document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length > 0,
          widget_errors: (document.body.innerText.match(/Error displaying widget/g) || []).length,
          empty_stderr: stderr.filter(o => !o.innerText.trim()).length,
          plotly: document.querySelectorAll('.js-plotly-plot').length};
})()"""
SAVE = """(() => { const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.context);
  return w.context.save().then(() => 'ok', e => String(e)); })()"""


async def check(names: list[str], work: Path, lab_url: str, chromium: str) -> list[dict]:
    from tornado.websocket import websocket_connect

    port = free_port()
    browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
                                "--window-size=1400,1000", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = json.loads(wait_for(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=2**28)
        ids = iter(range(1, 10**9))

        async def call(method: str, **params):
            mid = next(ids)
            await ws.write_message(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("id") == mid:
                    return msg.get("result", msg.get("error"))

        async def js(expr: str):
            r = await call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
            return r.get("result", {}).get("value")

        reports = []
        for name in names:
            nb_dir = work / "notebooks"
            before = {ext: (nb_dir / f"{name}{ext}").read_bytes() for ext in (".ipynb", ".py")}
            has_plotly = b"application/vnd.plotly.v1+json" in before[".ipynb"]
            await call("Page.navigate", url=f"{lab_url}/lab/tree/notebooks/{name}.py?token={TOKEN}&reset")
            for _ in range(240):  # up to 2 min for the page, the notebook and its first output
                await asyncio.sleep(0.5)
                if await js("!!(window.jupyterapp && document.querySelector('.jp-NotebookPanel .jp-OutputArea-output'))"):
                    break
            await asyncio.sleep(8)  # outputs render, the kernel starts and reports its spec
            report = {"notebook_name": name, **(await js(PAGE_REPORT) or {})}
            report["save"] = await js(SAVE)
            await asyncio.sleep(2)
            after = {ext: (nb_dir / f"{name}{ext}").read_bytes() for ext in before}
            report.update({f"unchanged{ext}": before[ext] == after[ext] for ext in before})
            report["ok"] = bool(report.get("notebook") and not report.get("text_editor") and not report.get("dirty")
                                and report.get("widget_errors") == 0 and report.get("empty_stderr") == 0
                                and (report.get("plotly", 0) > 0 or not has_plotly) and report["save"] == "ok"
                                and all(report[f"unchanged{ext}"] for ext in before))
            print(json.dumps(report), flush=True)
            reports.append(report)
            await js("window.jupyterapp.commands.execute('application:close-all')")
            await asyncio.sleep(1)
        return reports
    finally:
        browser.terminate()
        browser.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="NN_name stems (default: every notebooks/NN_*.py)")
    ap.add_argument("--jupyter", default=str(Path(sys.executable).with_name("jupyter")), help="the jupyter command")
    ap.add_argument("--notebooks-dir", type=Path, default=ROOT / "notebooks", help="the notebooks to copy and check")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("google-chrome") or "chromium")
    args = ap.parse_args(argv)
    names = args.notebooks or sorted(p.stem for p in args.notebooks_dir.glob("[0-9][0-9]_*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(args.notebooks_dir, work / "notebooks")
        shutil.copy2(ROOT / "jupytext.toml", work / "jupytext.toml")
        for name in names:  # as in a fresh checkout after `make notebooks`: the .py is the newer file of the pair
            os.utime(work / "notebooks" / f"{name}.py")
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        server = subprocess.Popen([args.jupyter, "lab", "--no-browser", f"--port={port}", f"--ServerApp.token={TOKEN}",
                                   f"--config={ROOT / 'jupyter' / 'jupyter_server_config.py'}", "--allow-root",
                                   "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={work}"],
                                  cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lab_url = f"http://127.0.0.1:{port}"
            wait_for(f"{lab_url}/api/status?token={TOKEN}")
            reports = asyncio.run(check(names, work, lab_url, args.chromium))
        finally:
            server.terminate()
            server.wait()
    failed = [r["notebook_name"] for r in reports if not r["ok"]]
    print("all notebooks feel native" if not failed else f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
