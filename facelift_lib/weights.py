"""Trained weights shipped with the workbook: `weights/<name>.pt` described by `weights/manifest.json`.

    from facelift_lib.weights import load_shipped
    model = load_shipped("gslrm_demo_128")      # GSLRM, eval mode, sha256-checked
    pipe = load_shipped_pipeline("mvdiffusion_demo")  # multi-view diffusion, sha256-checked

A manifest entry records what a researcher needs to trust and reproduce the file: the file name, its sha256
and size, the model config, the training recipe and exact command, the data (generator and seed ranges per
split), steps, wall time, the machine load, the training log (copied beside the weights) and the quality
measured on unseen test mice. `verify_shipped` refuses a missing manifest, entry or file and a file whose
sha256 differs, naming the file and the fix. `ship` writes a weights-only file from a training run and its
entry (`ship(name, run_or_checkpoint, training_command=..., data=..., ...)`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST = "manifest.json"
# What a notebook's "shipped" means for each kind of model. The demo's GS-LRM is the 128² one; gslrm_demo (64²) is
# the model it was doubled from (its recipe's init_from), kept so that the recipe chain can be re-run.
DEFAULT_SHIPPED = {"gslrm": "gslrm_demo_128", "mvdiffusion": "mvdiffusion_demo"}


class ShippedWeightsError(RuntimeError):
    """A shipped weights file or its manifest entry is missing or does not match (the message says the fix)."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(weights_dir: str | Path | None = None) -> dict[str, Any]:
    """weights/manifest.json as a dict {name: entry}; a missing or unreadable manifest is an error naming it."""
    path = Path(weights_dir or WEIGHTS_DIR) / MANIFEST
    if not path.is_file():
        raise ShippedWeightsError(f"{path} not found: the shipped weights' manifest is missing. Restore it from git "
                                  f"(git checkout HEAD -- weights/) or rebuild it with the recipes in weights/recipes/")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShippedWeightsError(f"{path} is not valid JSON ({e}); restore it from git (git checkout HEAD -- "
                                  f"{MANIFEST} in weights/)") from e


def verify_shipped(name: str, weights_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """(path, manifest entry) of shipped weights `name` after checking the file exists and its sha256 matches."""
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    manifest = read_manifest(weights_dir)
    if name not in manifest:
        raise ShippedWeightsError(f"{weights_dir / MANIFEST} has no entry {name!r}; shipped: {sorted(manifest)}")
    entry = manifest[name]
    path = weights_dir / entry["file"]
    fix = (f"restore it from git (git checkout HEAD -- weights/{entry['file']}) or retrain it with "
           f"{entry.get('training_command', 'its recipe in weights/recipes/')} and ship it again")
    if not path.is_file():
        raise ShippedWeightsError(f"shipped weights {path} not found (manifest entry {name!r}); {fix}")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ShippedWeightsError(f"shipped weights {path} are altered: sha256 {digest} but {weights_dir / MANIFEST} "
                                  f"records {entry['sha256']}; {fix}")
    return path, entry


def load_shipped(name: str = DEFAULT_SHIPPED["gslrm"], weights_dir: str | Path | None = None):
    """The shipped GS-LRM `name` (sha256-verified), in eval mode on CPU."""
    from .gslrm.model import GSLRMConfig, model_from_checkpoint, read_checkpoint

    path = shipped_path(name, "gslrm", weights_dir)
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, GSLRMConfig(**ckpt["model_config"]), str(path)).eval()


def load_shipped_pipeline(name: str = DEFAULT_SHIPPED["mvdiffusion"], weights_dir: str | Path | None = None,
                          device: str = "cpu"):
    """The shipped multi-view diffusion model `name` (sha256-verified) as an `MVDiffusionPipeline`."""
    from .mvdiffusion.pipeline import load_checkpoint_pipeline

    return load_checkpoint_pipeline(shipped_path(name, "mvdiffusion", weights_dir), device=device)


def shipped_path(name: str, kind: str, weights_dir: str | Path | None = None) -> Path:
    """Path of shipped weights `name` of `kind` ("gslrm" | "mvdiffusion") after the sha256 check: what a
    notebook's training starts from (`init_from`)."""
    return shipped_start(name, kind, weights_dir)[0]


def shipped_start(choice: str, kind: str, weights_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """(path, model_config) of the shipped weights a training starts from, after the sha256 and kind checks.
    `choice` is "shipped" (the workbook's model of `kind`, `DEFAULT_SHIPPED`) or a manifest entry name."""
    name = DEFAULT_SHIPPED[kind] if choice == "shipped" else choice
    path, entry = verify_shipped(name, weights_dir)
    if entry.get("kind") != kind:
        raise ShippedWeightsError(f"{path}: manifest entry {name!r} is a {entry.get('kind')!r} model, not {kind!r}")
    return path, dict(entry["model_config"])


def ship(name: str, checkpoint: str | Path, weights_dir: str | Path | None = None, log: str | Path | None = None,
         **fields: Any) -> Path:
    """Write weights/<name>.pt from a training checkpoint or run folder (its newest checkpoint) of either trainer,
    weights only (no optimizer or RNG state; a diffusion model's EMA weights become its weights), copy the run's
    log.jsonl beside it as <name>.log.jsonl, and set the manifest entry: file, sha256, bytes, kind
    ("gslrm" | "mvdiffusion"), model_config, steps, plus `fields` (training_command, data, wall time ...)."""
    from .io import save_torch_atomic
    from .training import checkpoint_file

    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    src = checkpoint_file(checkpoint)
    payload, kind, steps = _shippable(src)
    out = save_torch_atomic(payload, weights_dir / f"{name}.pt", f"shipped weights {name}")
    entry: dict[str, Any] = {"file": out.name, "sha256": sha256_of(out), "bytes": out.stat().st_size, "kind": kind,
                             "model_config": payload["model_config"], "steps": steps, "source_checkpoint": str(src)}
    log = Path(log) if log else src.parent.parent / "log.jsonl"
    if log.is_file():
        dst = weights_dir / f"{name}.log.jsonl"
        shutil.copyfile(log, dst)
        entry.update(log=dst.name, log_sha256=sha256_of(dst))
    entry.update(fields)
    manifest = read_manifest(weights_dir) if (weights_dir / MANIFEST).is_file() else {}
    manifest[name] = entry
    (weights_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _shippable(src: Path) -> tuple[dict[str, Any], str, int | None]:
    """(weights-only payload, kind, steps) of a training checkpoint of either trainer (read once)."""
    from .gslrm.model import read_checkpoint
    from .mvdiffusion.pipeline import CHECKPOINT_FORMAT, model_from_checkpoint
    from .mvdiffusion.train import stable_scheduler_config

    ckpt = read_checkpoint(src)  # weights_only; an unreadable file or one without "model" is an error naming it
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        if ckpt["kind"] != "pixel":
            raise ShippedWeightsError(f"{src}: a {ckpt['kind']!r} diffusion checkpoint; only the small pixel model "
                                      "is shipped (a fine-tuned FaceLift UNet needs its pipeline folder)")
        model = model_from_checkpoint(ckpt, use_ema=ckpt.get("ema") is not None, source=src)
        keep = ("format", "kind", "model_config", "camera_type", "step", "params")
        payload = {**{k: ckpt[k] for k in keep}, "model": model.state_dict(), "ema": None, "ema_applied": True,
                   "noise_scheduler_config": stable_scheduler_config(ckpt["noise_scheduler_config"])}
        return payload, "mvdiffusion", ckpt["step"]
    if "model_config" not in ckpt:
        raise ShippedWeightsError(f"{src} has no model_config: ship checkpoints written by facelift_lib.gslrm.train "
                                  "or facelift_lib.mvdiffusion.train")
    payload = {"model": ckpt["model"], "model_config": ckpt["model_config"],
               "train_config": ckpt.get("train_config", {}), "fwdbwd_pass_step": ckpt.get("fwdbwd_pass_step")}
    return payload, "gslrm", ckpt.get("fwdbwd_pass_step")


def load_mvdiffusion(choice: str | Path, run_dir: str | Path, shipped_name: str = DEFAULT_SHIPPED["mvdiffusion"],
                     device: str = "cpu"):
    """A notebook's diffusion pipeline: "shipped" (weights/<shipped_name>.pt, sha256-checked), "run" (the newest
    checkpoint of `run_dir`, notebook 03's run) or a path (a checkpoint or a run folder)."""
    from .mvdiffusion.pipeline import load_checkpoint_pipeline
    from .training import checkpoint_file

    if choice == "shipped":
        return load_shipped_pipeline(shipped_name, device=device)
    return load_checkpoint_pipeline(checkpoint_file(run_dir if choice == "run" else choice, "03_mvdiffusion"),
                                    device=device)


def load_gslrm(choice: str | Path, run_dir: str | Path, shipped_name: str = DEFAULT_SHIPPED["gslrm"]):
    """A notebook's GS-LRM: "shipped" (weights/<shipped_name>.pt, sha256-checked), "run" (the newest checkpoint
    of `run_dir`, notebook 05's run) or a path (a ckpt_*.pt or a run folder). Errors name what is missing."""
    from .gslrm.train import load_trained_model

    if choice == "shipped":
        return load_shipped(shipped_name)
    return load_trained_model(run_dir if choice == "run" else choice)
