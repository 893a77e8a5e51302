"""Two runs of one recipe side by side (a reproduction): the same run bit for bit, or how far apart.

    .venv/bin/python benchmarks/compare_training_runs.py weights/gslrm_demo.log.jsonl <re-run folder> \
        [--window 1000] [--weights weights/gslrm_demo.pt <re-run checkpoint or folder>]

A run is its folder (its log.jsonl) or a log file. Prints the first logged step whose records differ (every
field but the wall clocks step_time and elapsed_s), the largest relative difference of the loss over the first 10 and 100 common steps, the
mean loss per window of steps for both runs, and with --weights whether every model tensor of the two files
(training checkpoints or shipped weights, either trainer) is equal, else the largest absolute difference; a
diffusion training checkpoint is read as it ships, its EMA weights (`model_weights`).
Quality on unseen mice is the eval scripts' job (eval_gslrm_views.py, eval_mvdiffusion_views.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from facelift_lib.gslrm.model import read_checkpoint
from facelift_lib.mvdiffusion.pipeline import CHECKPOINT_FORMAT, model_from_checkpoint
from facelift_lib.training import LOG_NAME, checkpoint_file

IGNORED = ("step_time", "elapsed_s")  # wall clocks (GS-LRM's, diffusion's): differ between any two runs


def training_records(run: str | Path) -> list[dict[str, Any]]:
    """The per-step records (entries with a "loss") of a run folder's log.jsonl or of a log file."""
    path = Path(run)
    path = path / LOG_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}: give a run folder (with {LOG_NAME}) or a .jsonl file")
    return [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def first_differing_step(a: list[dict], b: list[dict], ignore: tuple[str, ...] = IGNORED) -> int | None:
    """The first step whose records differ in any field but `ignore`, over the steps both runs logged."""
    for ra, rb in zip(a, b):
        if ra["step"] != rb["step"]:
            return min(ra["step"], rb["step"])
        if {k: v for k, v in ra.items() if k not in ignore} != {k: v for k, v in rb.items() if k not in ignore}:
            return ra["step"]
    return None


def window_mean_losses(records: list[dict], window: int) -> dict[int, float]:
    """{first step of the window: mean loss} over consecutive windows of `window` steps."""
    losses: dict[int, list[float]] = {}
    for r in records:
        losses.setdefault((r["step"] - 1) // window * window + 1, []).append(r["loss"])
    return {k: sum(v) / len(v) for k, v in losses.items()}


def model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights a checkpoint, run folder or shipped file holds as shipped: a diffusion training checkpoint's
    EMA weights (what `weights.ship` writes), else its "model"."""
    src = checkpoint_file(path)
    ckpt = read_checkpoint(src)
    if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("ema") is not None:
        return model_from_checkpoint(ckpt, use_ema=True, source=src).state_dict()
    return ckpt["model"]


def model_tensor_difference(path_a: str | Path, path_b: str | Path) -> tuple[bool, float]:
    """(every model tensor bitwise equal, largest absolute difference) of two checkpoints or shipped files."""
    ma, mb = (model_weights(p) for p in (path_a, path_b))
    if ma.keys() != mb.keys():
        raise ValueError(f"{path_a} and {path_b} hold different models: keys {sorted(ma.keys() ^ mb.keys())[:5]}")
    equal = all(torch.equal(ma[k], mb[k]) for k in ma)
    worst = max(float((ma[k].float() - mb[k].float()).abs().max()) if ma[k].numel() else 0.0 for k in ma)
    return equal, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--window", type=int, default=1000, help="steps per mean-loss window")
    ap.add_argument("--weights", nargs=2, metavar=("A", "B"), help="two checkpoints / shipped files to compare")
    args = ap.parse_args()
    a, b = training_records(args.run_a), training_records(args.run_b)
    n = min(len(a), len(b))
    print(f"A {args.run_a}: {len(a)} steps; B {args.run_b}: {len(b)} steps; {n} in common")
    step = first_differing_step(a[:n], b[:n])
    print("records of the common steps: " + ("all equal but " + ", ".join(IGNORED) if step is None
                                             else f"first differ at step {step}"))
    for m in (10, 100):
        if n >= m:
            rel = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a[:m], b[:m]))
            print(f"largest relative loss difference over the first {m} steps: {rel:.2e}")
    wa, wb = window_mean_losses(a[:n], args.window), window_mean_losses(b[:n], args.window)
    print(f"mean loss per {args.window} steps (step: A  B  B/A-1)")
    for k in wa:
        print(f"  {k:>6}: {wa[k]:.5f}  {wb[k]:.5f}  {wb[k] / wa[k] - 1:+.2%}")
    if args.weights:
        equal, worst = model_tensor_difference(*args.weights)
        print(f"model tensors: {'all bitwise equal' if equal else f'differ, largest |A-B| {worst:.3g}'}")


if __name__ == "__main__":
    main()
