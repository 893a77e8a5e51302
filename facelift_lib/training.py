"""The training run folder: one convention for both trainers (`gslrm.train`, DDP; `mvdiffusion.train`, accelerate).

    run_dir/
      checkpoints/ckpt_{step:016d}.pt   the newest `keep` checkpoints, each written atomically
      log.jsonl                         one JSON object per line, every one with its "step"
      config.json                       the run's config (written at every start, resumes included)
      .facelift.lock                    one writer at a time (`locks.FolderLock`, the trainers take it)
      samples/                          diffusion only: validation grids and tensors per step

Each training loop stays its own; what they share is here:

- **Checkpoint names** are FaceLift's: `ckpt_{step:016d}.pt` (`facelift_reference/README.md`: what FaceLift's
  GS-LRM trainer writes and resumes from). A GS-LRM checkpoint also has FaceLift's file structure, so one
  name for both trainers is the name a FaceLift user recognises and the 16 digits never overflow. They sit in
  `checkpoints/`, apart from the log, the config and the samples. Only names of exactly that form count
  (a `ckpt_init.pt` beside them is not a checkpoint of the run). What is *in* a checkpoint stays each trainer's.
- **resume** (`resolve_resume`): None = a fresh run, and a run folder that already holds checkpoints is then an
  error unless `overwrite=True` (which deletes them, the log and the samples); "latest" = continue from the
  newest checkpoint, or start fresh (saying so) when there is none; a path = continue from that file, which must
  exist. The same in both trainers, with the same default (None: nothing continues or is deleted unasked).
  A resumed run rewinds log.jsonl to its checkpoint's step (`rewind_log`), so redone steps are not logged twice.
- **Non-finite loss**: the step is skipped, not applied (`skip_reason`: a non-finite loss or gradient norm,
  or a norm above a threshold), logged with its reason and printed; the run goes on. One bad batch (bf16
  overflow, an empty mask) must not end a day of training, and the log shows every skipped step.
- **Messages** a user must see (resumed from where, starting fresh, a skipped step, collapse) go to stdout
  through `note`, from the first process only: a notebook shows them; `logging` alone it does not.
- **Paths**: the dataclass defaults are relative to the working directory (the repository root, where the CLIs
  and `python -m facelift_lib run` start); notebooks pass their own `out_dir`.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .io import save_torch_atomic
from .locks import atomic_write_bytes

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^ckpt_(\d{16})\.pt$")
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"
DEFAULT_OUT_DIR = "outputs/smoke"  # the smoke profile's out_dir, relative to the working directory (repo root)


# --- messages ------------------------------------------------------------------------------------------------
def is_first_process() -> bool:
    """True in a single process and in rank 0 of torchrun / accelerate (from the launcher's RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def note(tag: str, message: str) -> None:
    """A line a user must see, `[tag] message` on stdout (a notebook shows it), from the first process only."""
    if is_first_process():
        print(f"[{tag}] {message}", flush=True)


# --- checkpoints ---------------------------------------------------------------------------------------------
def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """run_dir/checkpoints/ckpt_{step:016d}.pt"""
    return checkpoints_dir(run_dir) / f"ckpt_{int(step):016d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first (only names ckpt_{16 digits}.pt)."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name))


def newest_checkpoint(run_dir: str | Path, producer: str | None = None) -> Path:
    """The newest checkpoint of a run; FileNotFoundError naming the folder (and `producer`, the notebook or
    command that trains into it) when there is none."""
    found = list_checkpoints(run_dir)
    if not found:
        how = f"run {producer} first" if producer else "train first"
        raise FileNotFoundError(f"no ckpt_*.pt in {checkpoints_dir(run_dir)}: {how}, or give a checkpoint file")
    return found[-1]


def checkpoint_file(path: str | Path, producer: str | None = None) -> Path:
    """A checkpoint file as given, or a run folder's newest checkpoint (`newest_checkpoint`); a path that does
    not exist is an error naming it."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        how = f": run {producer} first" if producer else ""
        raise FileNotFoundError(f"checkpoint not found: {path} (a ckpt_*.pt file or a training run folder){how}")
    return newest_checkpoint(path, producer)


def save_checkpoint(run_dir: str | Path, step: int, payload: dict[str, Any], keep: int, what: str) -> Path:
    """Write checkpoints/ckpt_{step:016d}.pt atomically (`io.save_torch_atomic`: a crash or a full disk leaves
    the earlier ones whole, and the error names the file), then delete all but the newest `keep` (0 = keep all)."""
    path = save_torch_atomic(payload, checkpoint_path(run_dir, step), what)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


# --- resume --------------------------------------------------------------------------------------------------
def check_resume(resume: str | None, overwrite: bool, where: str) -> None:
    """Refuse a `resume` that is not None / "latest" / a path, and overwrite=True with a resume (it deletes
    what the resume would continue)."""
    if resume is not None and not isinstance(resume, (str, Path)):
        raise TypeError(f"{where}.resume must be None, 'latest' or a checkpoint path, got {resume!r}")
    if overwrite and resume is not None:
        raise ValueError(f"{where}: overwrite=True starts over and deletes the run's checkpoints, but resume="
                         f"{str(resume)!r} continues one: set resume=None to start over, or overwrite=False")


def resolve_resume(run_dir: str | Path, resume: str | Path | None, overwrite: bool, tag: str) -> Path | None:
    """The checkpoint a run continues from, or None for a fresh start (see the module doc); no side effects
    but a note, so every process of a launch can call it."""
    run_dir = Path(run_dir)
    if resume is None:
        if list_checkpoints(run_dir) and not overwrite:
            raise FileExistsError(f"{checkpoints_dir(run_dir)} holds checkpoints of an earlier run: continue it with "
                                  "resume='latest', start over with overwrite=True, or use another run_dir")
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if found:
            note(tag, f"resume='latest': resuming from {found[-1]}")
            return found[-1]
        note(tag, f"resume='latest': no checkpoints in {checkpoints_dir(run_dir)}, starting fresh")
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {path} (use resume='latest' for the newest in "
                                f"{checkpoints_dir(run_dir)}, or None to start fresh)")
    return path


def clear_run(run_dir: str | Path, extra: Sequence[str] = ()) -> None:
    """A fresh start: remove the checkpoints, the log and the trainer's `extra` folders (e.g. samples/)."""
    run_dir = Path(run_dir)
    for sub in (CHECKPOINTS_DIR, *extra):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    (run_dir / LOG_NAME).unlink(missing_ok=True)


def write_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    """The run's config snapshot, run_dir/config.json (atomic)."""
    path = Path(run_dir) / CONFIG_NAME
    atomic_write_bytes(path, json.dumps(config, indent=1, default=str).encode())
    return path


# --- log -----------------------------------------------------------------------------------------------------
def append_log(run_dir: str | Path, entry: dict[str, Any]) -> None:
    """One line of log.jsonl; every entry carries its "step"."""
    if "step" not in entry:
        raise KeyError(f"a log.jsonl entry needs its 'step': {sorted(entry)}")
    with open(Path(run_dir) / LOG_NAME, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every entry of a run's log.jsonl, in order (all sessions of the run, resumes included)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; the trainer writes it (train first)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rewind_log(run_dir: str | Path, step: int) -> None:
    """Keep only the log entries up to `step`, the checkpoint a run resumes from: a run killed between
    checkpoints redoes those steps, and its log must not hold them twice. Atomic: a crash leaves the old log."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


# --- RNG -----------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """torch / numpy / python (/ CUDA) RNG states as tensors and plain types, so a checkpoint holding them
    loads with torch.load(weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                       cached], "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA only where it was captured and CUDA is here)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- non-finite steps ----------------------------------------------------------------------------------------
def skip_reason(loss: float, grad_norm: float | None, threshold: float = math.inf) -> str | None:
    """Why a step must not be applied (None = apply it): "nonfinite_loss", "nonfinite_grad", or "grad_norm"
    (above `threshold`). grad_norm None = not measured (a gradient-accumulation micro-step)."""
    if not math.isfinite(loss):
        return "nonfinite_loss"
    if grad_norm is not None and not math.isfinite(grad_norm):
        return "nonfinite_grad"
    if grad_norm is not None and grad_norm > threshold:
        return "grad_norm"
    return None


# --- profiles ------------------------------------------------------------------------------------------------
@dataclass
class ProfileSection:
    """What a trainer's CLI reads from a workbook profile (params/*.yaml)."""

    path: Path
    out_dir: Path        # the profile's out_dir as written (relative to the working directory), or outputs/<profile>
    seed: int            # the section's seed, else the profile's, else 0
    keys: dict[str, Any]  # the notebook section's keys


def read_profile_section(path: str | Path, section: str, data: dict[str, Any] | None = None) -> ProfileSection:
    """The `section` (a notebook's name) of a profile YAML, with the run-level out_dir and seed; `data` = the
    YAML's contents when already read."""
    path = Path(path)
    if data is None:
        import yaml

        if not path.is_file():
            raise FileNotFoundError(f"profile not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
    keys = dict(data.get(section) or {})
    out_dir = Path(data.get("out_dir", f"outputs/{data.get('profile', path.stem)}"))
    return ProfileSection(path=path, out_dir=out_dir, seed=int(keys.get("seed", data.get("seed", 0))), keys=keys)
