"""Does notebook 05's smoke fine-tune help or hurt on frames it never saw? For each learning rate, fine-tune the
shipped GS-LRM as 05 does (`profile_train_config`: the smoke data of <out>/data, 300 steps, every other setting
05's default) and run notebook 07's frame loop with it on 07's smoke sequence (another trajectory seed than the
frames 05 trains on); the shipped models without fine-tuning (--shipped, manifest names) are the first rows.

    .venv/bin/python benchmarks/probe_gslrm_finetune_lr.py --lr 2e-4 1e-4 5e-5 [--shipped gslrm_demo_128 gslrm_demo]

Needs a smoke run folder (`make demo` or `python -m facelift_lib notebooks`: 02's data and 07's sequence rig).
Writes runs and sequences under <out>/probes/finetune_lr/ and prints one row per model: 07's held-out camera
(masked PSNR, Mask IoU) and readout errors against the true mouse (centroid mm, heading deg), 48 frames.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from facelift_lib.behaviour import ReadoutConfig
from facelift_lib.gslrm.train import profile_train_config, train
from facelift_lib.sequence import SequenceConfig, clear_outputs, finish_sequence, run_sequence
from facelift_lib.weights import DEFAULT_SHIPPED, shipped_path

COLUMNS = ["heldout_psnr_masked", "heldout_mask_iou", "centroid_err_mm", "heading_err_deg", "length_err_mm"]


def sequence_scores(checkpoint: Path, out: Path, seq_dir: Path) -> dict[str, float]:
    """07's loop (its smoke defaults) with `checkpoint` on the sequence rig of the smoke run `out`."""
    cfg = SequenceConfig(rig_dir=str(out / "sequence" / "rig"), out_dir=str(seq_dir), checkpoint=str(checkpoint),
                         method="standard_camera", preprocess_size=128, readout=ReadoutConfig(min_opacity=0.02),
                         panel_size=96, turn_frames=48, threads=2)
    clear_outputs(cfg)
    run_sequence(cfg, workers=1, progress=False)
    summary = finish_sequence(cfg, video_format="gif").summary
    return {k: summary[k] for k in COLUMNS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-4, 5e-5])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="outputs/smoke")
    ap.add_argument("--shipped", nargs="*", default=[DEFAULT_SHIPPED["gslrm"], "gslrm_demo"],
                    help="shipped models (manifest names) run without fine-tuning")
    args = ap.parse_args()
    out = Path(args.out)
    probe = out / "probes" / "finetune_lr"
    rows = {f"{name}, no fine-tune": sequence_scores(shipped_path(name, "gslrm"), out, probe / f"seq_{name}")
            for name in args.shipped}
    for lr in args.lr:
        cfg = profile_train_config(out, lr=lr, max_steps=args.steps)
        cfg.run_dir, cfg.progress = str(probe / f"run_lr{lr:g}"), False
        t0 = time.time()
        result = train(cfg)
        print(f"lr {lr:g}: {args.steps} steps in {time.time() - t0:.0f} s -> {result.checkpoint}")
        name = f"{DEFAULT_SHIPPED['gslrm']} + 05 fine-tune, lr {lr:g}, {args.steps} steps"
        rows[name] = sequence_scores(result.checkpoint, out, probe / f"seq_lr{lr:g}")
    table = pd.DataFrame(rows).T[COLUMNS]
    print(f"07's smoke sequence ({out / 'sequence' / 'rig'}), 48 frames, held-out camera t mod 6, 128²:")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
