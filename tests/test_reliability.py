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
    assert oct((d / io.CAMERA_FILE).stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # nor mkstemp's 0600


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
    from facelift_lib.synthetic_rig import make_rig_dataset

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


# --- untrusted files run no code ----------------------------------------------------------------------------
class _Evil:
    """Unpickling calls open(marker, "w"): a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_diffusion_checkpoint_runs_no_code(tmp_path):
    from facelift_lib.mvdiffusion.pipeline import CHECKPOINT_FORMAT, load_checkpoint_pipeline, read_checkpoint

    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoints" / "ckpt_0000000000000002.pt"
    path.parent.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "pixel", "params": _Evil(marker)}, path)
    for load in (read_checkpoint, load_checkpoint_pipeline):
        with pytest.raises(ValueError, match=r"ckpt_0000000000000002.pt: refused.*could run code"):
            load(path)
    assert not marker.exists()


def test_resume_latest_from_a_crafted_checkpoint_runs_no_code(tmp_path, tiny_mv_checkpoint):
    from facelift_lib.mvdiffusion.pipeline import CHECKPOINT_FORMAT
    from facelift_lib.mvdiffusion.train import TrainParams, train

    _, train_list = tiny_mv_checkpoint
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "pixel", "params": _Evil(marker)},
               run / "checkpoints" / "ckpt_0000000000000009.pt")
    with pytest.raises(ValueError, match="refused"):
        train(TrainParams(run_dir=str(run), train_list=str(train_list), val_list=None, resume="latest",
                          pixel_model=TINY_PIXEL, max_steps=12, progress=False))
    assert not marker.exists()


def test_a_crafted_calibration_pickle_runs_no_code(tmp_path):
    from facelift_lib.calibration import load_mammal_pkl, save_mammal_pkl
    from facelift_lib.cameras import mouse_standard_6view

    marker = tmp_path / "code_ran"
    good = save_mammal_pkl(mouse_standard_6view(), tmp_path / "good.pkl")
    assert len(load_mammal_pkl(good, 512, 512)) == 6  # numpy arrays and plain types still load
    data = pickle.loads(good.read_bytes())
    data[0]["name"] = _Evil(marker)
    bad = tmp_path / "new_cam.pkl"
    bad.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"new_cam.pkl: refused to load: the pickle references (builtins|io)\.open"):
        load_mammal_pkl(bad)
    assert not marker.exists()


def test_a_truncated_calibration_pickle_is_named(tmp_path):
    from facelift_lib.calibration import load_mammal_pkl, save_mammal_pkl
    from facelift_lib.cameras import mouse_standard_6view

    path = save_mammal_pkl(mouse_standard_6view(), tmp_path / "new_cam.pkl")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"new_cam.pkl: not a readable pickle .*truncated or corrupt"):
        load_mammal_pkl(path)


def test_a_text_file_given_as_dannce_mat_is_named(tmp_path):
    from facelift_lib.calibration import load_dannce_mat

    path = tmp_path / "cams_dannce.mat"
    path.write_text("these are my notes, not a calibration\n" * 5)
    with pytest.raises(ValueError, match=r"cams_dannce.mat: not a readable MATLAB .mat file"):
        load_dannce_mat(path, 1152, 1024)


# --- diffusion checkpoints: corrupt, another size, a full disk ------------------------------------------------
TINY_PIXEL = {"image_size": 16, "block_out_channels": [8, 16], "cross_attention_dim": 16, "attention_head_dim": 8}


def test_a_truncated_diffusion_checkpoint_is_named(tmp_path, tiny_mv_checkpoint):
    from facelift_lib.mvdiffusion.pipeline import load_checkpoint_pipeline

    ckpt, _ = tiny_mv_checkpoint
    cut = tmp_path / "ckpt_0000000000000002.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"ckpt_0000000000000002.pt: cannot read the checkpoint .*truncated or corrupt"):
        load_checkpoint_pipeline(cut)


def test_a_diffusion_checkpoint_of_another_size_is_named(tiny_mv_checkpoint):
    from facelift_lib.mvdiffusion.train import TrainParams, build_model

    ckpt, _ = tiny_mv_checkpoint
    other = {**TINY_PIXEL, "block_out_channels": [16, 32]}
    with pytest.raises(ValueError, match=rf"{ckpt.name}: the checkpoint's weights do not fit the model .*size "
                                         r"mismatch.*pixel_model"):
        build_model(TrainParams(init_from=str(ckpt), pixel_model=other))


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64")])
def test_disk_full_during_a_checkpoint_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, failure):
    from facelift_lib.training import checkpoint_path, save_checkpoint

    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(tmp_path, 1, {"step": 1}, 0, "multi-view diffusion checkpoint")

    def full(obj, f, *a, **kw):
        f.write(b"half")  # save_torch_atomic hands torch.save an open temp file
        raise failure
    monkeypatch.setattr(io.torch, "save", full)
    with pytest.raises(OSError, match=r"cannot write multi-view diffusion checkpoint .*ckpt_0000000000000001.pt \(.* free\).*"
                                      r"earlier checkpoints are unchanged"):
        save_checkpoint(tmp_path, 1, {"step": 2}, 0, "multi-view diffusion checkpoint")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["ckpt_0000000000000001.pt"]  # no temp file left


# --- diffusion training data ----------------------------------------------------------------------------
def test_diffusion_dataset_refuses_non_square_and_all_empty_alpha_samples(tmp_path):
    from facelift_lib.mvdiffusion.train import MultiViewDataset

    cams = standard_cameras("mouse_standard_6view", 16)
    wide = io.save_sample(tmp_path / "wide", disc_views()[..., :12, :], cams.scaled_to(16, 12))
    empty_views = disc_views()
    empty_views[:, 3] = 0
    empty = io.save_sample(tmp_path / "empty", empty_views, cams)
    for d, msg in ((wide, r"16x12, not square"), (empty, r"alpha \(mask\) is empty in every view")):
        lst = io.write_list_file(tmp_path / f"{d.name}.txt", [d])
        with pytest.raises(ValueError, match=rf"{d.name} \(listed in .*{d.name}.txt\): .*{msg}"):
            MultiViewDataset(lst, 6, 16)[0]


# --- one writer per training run folder; a resume says so -------------------------------------------------
HOLDER = ("from facelift_lib.locks import FolderLock; import sys, time; "
          "FolderLock(sys.argv[1], 'a test holder').acquire(); print('locked', flush=True); time.sleep(120)")


@pytest.fixture
def held_folder(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield folder, holder.pid
    holder.kill()
    holder.wait()


def test_a_second_diffusion_training_into_a_run_dir_fails_at_once(held_folder, tiny_mv_checkpoint):
    from facelift_lib.mvdiffusion.train import TrainParams, train

    folder, pid = held_folder
    with pytest.raises(locks.FolderLockedError, match=rf"{folder} is in use by process {pid}"):
        train(TrainParams(run_dir=str(folder), train_list=str(tiny_mv_checkpoint[1]), val_list=None,
                          pixel_model=TINY_PIXEL, progress=False))


def test_a_second_gslrm_training_into_a_run_dir_fails_at_once(held_folder, tmp_path):
    from facelift_lib.gslrm.train import TrainConfig, train

    folder, pid = held_folder
    with pytest.raises(locks.FolderLockedError, match=rf"{folder} is in use by process {pid} \(a test holder"):
        train(TrainConfig(train_list=str(tmp_path / "nothing.txt"), run_dir=str(folder), progress=False,
                          validate_data=False))


def test_a_resumed_diffusion_training_prints_its_step(tmp_path, tiny_mv_checkpoint, capsys):
    from facelift_lib.mvdiffusion.train import TrainParams, train

    p = dict(run_dir=str(tmp_path / "run"), train_list=str(tiny_mv_checkpoint[1]), val_list=None,
             pixel_model=TINY_PIXEL, batch_size=2, checkpoint_every=2, val_every=0, progress=False, resume="latest")
    train(TrainParams(**p, max_steps=2))
    capsys.readouterr()
    train(TrainParams(**p, max_steps=3))
    assert f"resumed from {tmp_path / 'run' / 'checkpoints' / 'ckpt_0000000000000002.pt'} at step 2" in capsys.readouterr().out


def test_a_resumed_gslrm_training_prints_its_step(tmp_path, capsys):
    from facelift_lib.gslrm.data import write_toy_dataset
    from facelift_lib.gslrm.train import TrainConfig, train
    from facelift_lib.training import checkpoint_path

    lst, _ = write_toy_dataset(tmp_path / "toy", n_samples=2, size=16, seed=0, n_gaussians=600)
    cfg = dict(train_list=str(lst), run_dir=str(tmp_path / "run"), image_size=16, progress=False, validate_data=False,
               model=dict(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2), warmup_steps=1, ckpt_every=1,
               views_per_step=2, resume="latest")
    train(TrainConfig(**cfg, max_steps=1))
    capsys.readouterr()
    train(TrainConfig(**cfg, max_steps=2))
    assert f"[gslrm] resumed from {checkpoint_path(tmp_path / 'run', 1)} at step 1" in capsys.readouterr().out


# --- launched workers die with their launcher ---------------------------------------------------------------
WORKER = "from facelift_lib.locks import die_with_parent; import os, time; die_with_parent(); " \
         "print(os.getpid(), flush=True); time.sleep(120)"


def _wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie is gone too (its parent, us or init, reaps it)
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")
def test_a_worker_dies_when_its_launcher_is_killed(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        w = subprocess.Popen([sys.executable, "-c", {WORKER!r}], stdout=subprocess.PIPE, text=True)
        print(w.stdout.readline().strip(), flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    gone = _wait_gone(worker)
    if not gone:
        os.kill(worker, signal.SIGKILL)  # our own child's child: do not leave it behind
    assert gone, "the worker outlived its killed launcher"


def test_both_trainers_ask_to_die_with_their_launcher(held_folder, monkeypatch, tmp_path, tiny_mv_checkpoint):
    import facelift_lib.gslrm.train as G
    import facelift_lib.mvdiffusion.train as M

    folder, _ = held_folder
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # as torchrun sets it for its workers
    runs = {G: lambda: G.train(G.TrainConfig(train_list=str(tmp_path / "x.txt"), run_dir=str(folder), progress=False)),
            M: lambda: M.train(M.TrainParams(run_dir=str(folder), train_list=str(tiny_mv_checkpoint[1]), val_list=None,
                                             pixel_model=TINY_PIXEL, progress=False))}
    for module, run in runs.items():
        calls = []
        monkeypatch.setattr(module, "die_with_parent", lambda: calls.append(True))
        with pytest.raises(locks.FolderLockedError):  # stops right after: the run_dir is held
            run()
        assert calls == [True], module.__name__


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")
def test_killing_torchrun_leaves_no_orphan_workers(tmp_path):
    """The mechanism under the real launcher (without die_with_parent the workers were re-parented to init and
    kept running: checked by hand with the same script minus that call)."""
    script = tmp_path / "worker.py"
    script.write_text("from facelift_lib.locks import die_with_parent, launched_worker\nimport os, sys, time\n"
                      "assert launched_worker()\ndie_with_parent()\n"
                      f"open({str(tmp_path / 'pid')!r} + os.environ['LOCAL_RANK'], 'w').write(str(os.getpid()))\n"
                      "time.sleep(120)\n")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    files = [tmp_path / "pid0", tmp_path / "pid1"]
    deadline = time.monotonic() + 120
    while not all(f.is_file() and f.read_text() for f in files) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(f.read_text()) for f in files]
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    alive = [w for w in workers if not _wait_gone(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the killed torchrun launcher"


# --- reconstruction inputs ----------------------------------------------------------------------------------
def _with_nan(K: torch.Tensor, view: int) -> torch.Tensor:
    K = K.clone()
    K[view, 0, 0] = float("nan")
    return K


def _views_and_cams():
    return disc_views(size=16), standard_cameras("mouse_standard_6view", 16)


@pytest.mark.parametrize("spoil, msg", [
    (lambda v, c: (v, c.replace(K=_with_nan(c.K, 1))), r"cams: frame 1: K or w2c holds NaN"),
    (lambda v, c: (v, c.replace(w2c=c.w2c * torch.tensor([2.0, 1, 1, 1], dtype=c.w2c.dtype)[:, None])),
     r"cams: frame 0: w2c is not rigid"),
    (lambda v, c: (v * 255, c), r"values in \[0, 255\], expected \[0,1\]; it looks like 0..255: divide by 255"),
    (lambda v, c: (v[..., :12, :], c.scaled_to(16, 12)), r"16x12 is not square"),
    (lambda v, c: (v[..., :8, :8], c), r"cameras are for 16x16 images but the views are 8x8"),
    (lambda v, c: (v[:, :3], c), r"\[V,4,H,W\]"),
])
def test_reconstruct_from_views_checks_its_inputs(spoil, msg):
    from facelift_lib.reconstruct import reconstruct_from_views

    views, cams = spoil(*_views_and_cams())
    with pytest.raises(ValueError, match=msg):
        reconstruct_from_views(views, cams, model=None)  # refused before the model is touched


@pytest.mark.parametrize("ref, msg", [
    (disc_views(1, 16)[0] * 255, r"reference: values in .*divide by 255"),
    (disc_views(1, 16)[0][:, :12], r"reference: 16x12 is not square"),
    (disc_views(1, 16)[0][:3], r"RGB without alpha"),
    (disc_views(1, 16)[0].index_fill(0, torch.tensor([0]), float("nan")), r"reference: holds NaN"),
])
def test_reconstruct_checks_its_reference(ref, msg):
    from facelift_lib.reconstruct import reconstruct

    with pytest.raises(ValueError, match=msg):
        reconstruct(ref, pipe=None, model=None)


def test_every_torch_load_in_the_workbook_is_weights_only():
    """A guard for new code: torch.load without weights_only=True, or a bare pickle.load, would run a crafted file's
    code (calibration pickles go through calibration.read_calibration_pickle)."""
    import ast

    offenders = []
    for path in sorted([*(REPO / "facelift_lib").rglob("*.py"), *(REPO / "notebooks").glob("*.py"),
                        *(REPO / "benchmarks").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)):
                continue
            name = f"{node.func.value.id}.{node.func.attr}"
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if (name == "torch.load" and not safe) or name in ("pickle.load", "pickle.loads"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not offenders, offenders


def test_trainer_params_refuse_a_string_where_a_number_goes():
    from facelift_lib.gslrm.train import TrainConfig
    from facelift_lib.mvdiffusion.train import TrainParams

    for cls in (TrainConfig, TrainParams):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: max_steps='40' \(str\), expected int.*without quotes"):
            cls(max_steps="40")
        cls(max_steps=40)
