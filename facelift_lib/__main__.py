"""CLI of the workbook runner.

    python -m facelift_lib run PROFILE [--only NAME ...] [--out DIR]   execute notebooks into outputs/<profile>/
    python -m facelift_lib notebooks [--only NAME ...]                 re-execute notebooks/*.ipynb in place
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from facelift_lib import workbook
from facelift_lib.locks import FolderLockedError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facelift_lib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks with a profile into its out_dir")
    run.add_argument("profile", help="profile YAML, e.g. params/smoke.yaml")
    run.add_argument("--only", nargs="+", metavar="NAME", help="notebook names (or NN prefixes) to run")
    run.add_argument("--out", metavar="DIR", help="output folder (overrides the profile's out_dir)")
    run.add_argument("--notebooks-dir", default=str(workbook.DEFAULT_NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    nbs = sub.add_parser("notebooks", help="re-execute notebooks/NN_*.ipynb in place with their defaults")
    nbs.add_argument("--only", nargs="+", metavar="NAME", help="notebook names (or NN prefixes)")
    nbs.add_argument("--notebooks-dir", default=str(workbook.DEFAULT_NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args) if args.command == "run" else _notebooks(args)


def _notebooks(args: argparse.Namespace) -> int:
    try:
        done = workbook.execute_in_place(args.notebooks_dir, args.only)
    except (workbook.NotebookFailed, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("executed in place: " + ", ".join(str(p) for p in done))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        profile = workbook.load_profile(args.profile, out_dir=args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = workbook.run_profile(profile, args.notebooks_dir, args.only)
    except (workbook.NotebookFailed, FolderLockedError, OSError, ValueError) as exc:
        # OSError: a read-only or full --out (the message names the folder); FileNotFoundError is one
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    else:
        print(f"done: {len(summary['notebooks'])} notebook(s) in {summary['total_seconds']:.1f} s")
        code = 0
    print(f"outputs: {profile.out_dir}  (executed notebooks, HTML, summary.json)")
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning, above the progress bars (no source echo)."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
