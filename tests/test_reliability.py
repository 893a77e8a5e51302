"""Issue 12: untrusted files run no code, a full disk destroys nothing, one output folder has one writer, and
inputs are checked where they enter. Each test here failed before its fix."""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facelift_lib import io, locks
from facelift_lib.cameras import standard_cameras

REPO = Path(__file__).resolve().parents[1]


def disc_views(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    img = torch.rand(n, 4, size, size, generator=torch.Generator().manual_seed(seed))
    img[:, 3] = 0
    img[:, 3, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return img


def enospc_after(n_ok: int, real):
    """A stand-in for a write function that succeeds n_ok times, then fails as a full disk does."""
    calls = {"n": 0}

    def write(path, *a, **kw):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, f"No space left on device: '{path}'")
        return real(path, *a, **kw)
    return write


# --- a full disk destroys nothing ----------------------------------------------------------------------
def test_save_sample_disk_full_leaves_the_old_sample_whole_and_names_the_file(tmp_path, monkeypatch):
    cams = standard_cameras("mouse_standard_6view", 16)
    old = io.save_sample(tmp_path / "frame_000001", disc_views(seed=1), cams)
    before, _ = io.load_sample(old, background=None)
    monkeypatch.setattr(io, "atomic_write_bytes", enospc_after(2, locks.atomic_write_bytes))
    with pytest.raises(OSError) as exc:
        io.save_sample(old, disc_views(seed=2), cams)
    assert exc.value.errno == errno.ENOSPC
    assert "frame_000001" in str(exc.value) and "unchanged" in str(exc.value)
    after, _ = io.load_sample(old, background=None)  # still a sample, and the old one
    assert torch.equal(before, after)
    assert [p.name for p in tmp_path.iterdir()] == ["frame_000001"]  # no half-written staging folder left


def test_save_sample_replaces_atomically_and_keeps_unmanaged_files(tmp_path):
    cams = standard_cameras("mouse_standard_6view", 16)
    d = io.save_sample(tmp_path / "s", disc_views(seed=1), cams)
    (d / "notes.txt").write_text("kept")
    io.save_sample(d, disc_views(seed=2), cams)
    got, _ = io.load_sample(d, background=None)
    assert torch.allclose(got, (disc_views(seed=2) * 255).round() / 255, atol=1e-6)
    assert (d / "notes.txt").read_text() == "kept"
    assert oct(d.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_sample_removes_staging_folders_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".s.saving-{dead}-abc123"
    (stale / "images").mkdir(parents=True)
    io.save_sample(tmp_path / "s", disc_views(), standard_cameras("mouse_standard_6view", 16))
    assert not stale.exists()


def test_preprocess_skip_treats_oserror_as_a_bad_frame(tmp_path, monkeypatch):
    from facelift_lib import preprocess
    from facelift_lib.rig import make_rig_dataset

    rig_dir = make_rig_dataset(tmp_path / "rig", n_frames=2, image_scale=0.1, n_gaussians=600)
    real = preprocess.write_sample
    calls = {"n": 0}

    def flaky(sample_dir, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, f"save_sample({sample_dir}): No space left on device")
        return real(sample_dir, *a, **kw)
    monkeypatch.setattr(preprocess, "write_sample", flaky)
    cfg = preprocess.PreprocessConfig(on_error="skip", workers=1)
    written = preprocess.preprocess_rig(rig_dir, tmp_path / "out", "bbox_uniform", size=32, config=cfg)
    assert len(written) == 1
    errors = json.loads((tmp_path / "out" / "preprocess_errors.json").read_text())
    assert errors["n_skipped"] == 1 and "No space left" in next(iter(errors["errors"].values()))


# --- inputs checked where they enter: samples -------------------------------------------------------------
def test_save_sample_refuses_nan_cameras(tmp_path):
    cams = standard_cameras("mouse_standard_6view", 16)
    K = cams.K.clone()
    K[2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"frame 2: K or w2c holds NaN"):
        io.save_sample(tmp_path / "s", disc_views(), cams.replace(K=K))
    assert not (tmp_path / "s").exists()


def test_load_sample_refuses_a_non_rigid_w2c(tmp_path):
    cams = standard_cameras("mouse_standard_6view", 16)
    d = io.save_sample(tmp_path / "s", disc_views(), cams)
    data = json.loads((d / io.CAMERA_FILE).read_text())
    data["frames"][1]["w2c"][0][0] *= 1.5
    (d / io.CAMERA_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"opencv_cameras.json: frame 1: w2c is not rigid"):
        io.load_sample(d)


def test_load_sample_names_a_truncated_camera_file(tmp_path):
    d = io.save_sample(tmp_path / "s", disc_views(), standard_cameras("mouse_standard_6view", 16))
    text = (d / io.CAMERA_FILE).read_text()
    (d / io.CAMERA_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"opencv_cameras.json: not valid JSON .*truncated or corrupt"):
        io.load_sample(d)


def test_load_sample_names_a_3x4_w2c(tmp_path):
    d = io.save_sample(tmp_path / "s", disc_views(), standard_cameras("mouse_standard_6view", 16))
    data = json.loads((d / io.CAMERA_FILE).read_text())
    data["frames"][0]["w2c"] = data["frames"][0]["w2c"][:3]
    (d / io.CAMERA_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"frame 0: w2c is 3x4.*append the row \[0, 0, 0, 1\]"):
        io.load_sample(d)
