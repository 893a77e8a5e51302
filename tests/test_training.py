"""The training run folder shared by both trainers (facelift_lib.training): names, resume, log, RNG, skipping."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from facelift_lib import training


def _save(run, step, keep=0):
    return training.save_checkpoint(run, step, {"step": step}, keep, "test checkpoint")


def test_checkpoints_are_named_as_facelift_and_the_newest_are_kept(tmp_path):
    run = tmp_path / "run"
    for step in (5, 10, 15):
        _save(run, step, keep=2)
    (run / "checkpoints" / "ckpt_init.pt").write_bytes(b"not one of the run's")
    assert [p.name for p in training.list_checkpoints(run)] == ["ckpt_0000000000000010.pt",
                                                                "ckpt_0000000000000015.pt"]
    assert training.newest_checkpoint(run) == training.checkpoint_path(run, 15)
    assert training.checkpoint_file(run) == training.checkpoint_path(run, 15)  # a run folder: its newest
    assert training.checkpoint_file(training.checkpoint_path(run, 10)) == training.checkpoint_path(run, 10)
    assert torch.load(training.newest_checkpoint(run), weights_only=True) == {"step": 15}


def test_a_run_without_checkpoints_names_the_notebook_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no ckpt_\*\.pt in .*empty.checkpoints: run 03_mvdiffusion first"):
        training.newest_checkpoint(tmp_path / "empty", "03_mvdiffusion")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope.*run 05_gslrm first"):
        training.checkpoint_file(tmp_path / "nope", "05_gslrm")


def test_resume_none_latest_and_path_mean_the_same_in_every_trainer(tmp_path, capsys):
    run = tmp_path / "run"
    assert training.resolve_resume(run, None, False, "t") is None  # nothing there: fresh
    assert training.resolve_resume(run, "latest", False, "t") is None
    assert "no checkpoints" in capsys.readouterr().out  # said on stdout, where a notebook shows it
    _save(run, 2)
    _save(run, 4)
    with pytest.raises(FileExistsError, match="resume='latest'.*overwrite=True"):
        training.resolve_resume(run, None, False, "t")  # a fresh start must not mix with an earlier run
    assert training.resolve_resume(run, None, True, "t") is None
    assert training.resolve_resume(run, "latest", False, "t") == training.checkpoint_path(run, 4)
    assert "[t] resume='latest': resuming from" in capsys.readouterr().out
    assert training.resolve_resume(run, str(training.checkpoint_path(run, 2)), False, "t") == \
        training.checkpoint_path(run, 2)
    with pytest.raises(FileNotFoundError, match="ckpt_9.pt"):
        training.resolve_resume(run, str(run / "ckpt_9.pt"), False, "t")
    with pytest.raises(ValueError, match="overwrite=True.*resume=None"):
        training.check_resume("latest", True, "TrainConfig")
    with pytest.raises(TypeError, match="TrainConfig.resume"):
        training.check_resume(True, False, "TrainConfig")


def test_clear_and_rewind(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    (run / "samples").mkdir()
    for step in (1, 2, 3):
        training.append_log(run, {"step": step, "loss": float(step)})
    training.append_log(run, {"step": 2, "validation": {"step": 2}})
    training.rewind_log(run, 2)
    assert [e["step"] for e in training.read_log(run)] == [1, 2, 2]
    with pytest.raises(KeyError, match="'step'"):
        training.append_log(run, {"loss": 1.0})
    training.clear_run(run, extra=("samples",))
    assert not (run / "checkpoints").exists() and not (run / "samples").exists()
    with pytest.raises(FileNotFoundError, match="log.jsonl"):
        training.read_log(run)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.save({"rng": training.rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(2), np.random.rand(2), random.random())
    training.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_skip_reason_policy():
    assert training.skip_reason(float("nan"), 1.0) == "nonfinite_loss"
    assert training.skip_reason(1.0, float("inf")) == "nonfinite_grad"
    assert training.skip_reason(1.0, None) is None  # not measured: nothing to refuse
    assert training.skip_reason(1.0, 300.0, 200.0) == "grad_norm"
    assert training.skip_reason(1.0, 300.0) is None  # no threshold by default


def test_profile_section_reads_out_dir_seed_and_keys(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("out_dir: outputs/x\nseed: 7\n05_gslrm:\n  max_steps: 9\n03_mvdiffusion:\n  seed: 2\n")
    a = training.read_profile_section(path, "05_gslrm")
    assert (str(a.out_dir), a.seed, a.keys) == ("outputs/x", 7, {"max_steps": 9})
    assert training.read_profile_section(path, "03_mvdiffusion").seed == 2  # the section's seed wins
    (tmp_path / "full.yaml").write_text(json.dumps({"profile": "full"}))
    assert str(training.read_profile_section(tmp_path / "full.yaml", "05_gslrm").out_dir) == "outputs/full"
