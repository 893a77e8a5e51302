"""GS-LRM trainer: resume, skipping, fine-tuning modes, FaceLift-structured checkpoints, config loading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facelift_lib.gslrm import GSLRM, CheckpointError, GSLRMConfig, load_facelift_checkpoint
from facelift_lib.gslrm.data import ViewsDataset, write_toy_dataset
from facelift_lib.gslrm.train import (SMOKE_FROM_SCRATCH, SMOKE_FROM_SHIPPED, TrainConfig, build_model,
                                      load_train_config, load_trained_model, profile_train_config, train,
                                      training_subset)
from facelift_lib.training import checkpoint_path, list_checkpoints, read_log, skip_reason
from facelift_lib.weights import DEFAULT_SHIPPED, ShippedWeightsError, ship, shipped_path

TINY_MODEL = dict(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2)


@pytest.fixture(scope="module")
def toy_list(tmp_path_factory):
    lst, _ = write_toy_dataset(tmp_path_factory.mktemp("toy"), n_samples=3, size=16, seed=0, n_gaussians=600)
    return str(lst)


def tiny_config(toy_list: str, run_dir, **kw) -> TrainConfig:
    base = dict(train_list=toy_list, run_dir=str(run_dir), image_size=16, model=TINY_MODEL, max_steps=6,
                warmup_steps=2, ckpt_every=3, lr=1e-3, views_per_step=2, progress=False, validate_data=False,
                resume="latest")
    base.update(kw)
    return TrainConfig(**base)


class Stop(Exception):
    pass


@pytest.fixture
def init_ckpt(tmp_path) -> str:
    """A FaceLift-structured checkpoint of the tiny model (seeded random weights), for fine-tuning modes."""
    torch.manual_seed(1)
    path = tmp_path / "ckpt_init.pt"
    torch.save({"model": GSLRM(GSLRMConfig(**TINY_MODEL)).state_dict(), "optimizer": {}, "lr_scheduler": {},
                "fwdbwd_pass_step": 500, "param_update_step": 500}, path)
    return str(path)


def test_killed_run_resumes_and_continues_the_loss_curve(toy_list, tmp_path):
    cfg = dict(max_steps=4, ckpt_every=2)
    full = train(tiny_config(toy_list, tmp_path / "full", **cfg))
    assert [r["step"] for r in full.log] == [1, 2, 3, 4]

    def kill_after_3(record):
        if record["step"] == 3:
            raise Stop  # like a kill after step 3: the last checkpoint is step 2

    with pytest.raises(Stop):
        train(tiny_config(toy_list, tmp_path / "killed", **cfg), callback=kill_after_3)
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == [checkpoint_path(tmp_path, 2).name]
    assert [r["step"] for r in read_log(tmp_path / "killed")] == [1, 2, 3]

    resumed = train(tiny_config(toy_list, tmp_path / "killed", **cfg))
    assert [r["step"] for r in resumed.log] == [1, 2, 3, 4]  # step 3 rerun once, not duplicated
    losses_full = [r["loss"] for r in full.log]
    losses_resumed = [r["loss"] for r in resumed.log]
    assert losses_resumed == pytest.approx(losses_full, rel=1e-5, abs=1e-7)
    assert resumed.steps == 4 and resumed.checkpoint.name == checkpoint_path(tmp_path, 4).name
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)


def test_max_wall_s_stops_with_a_checkpoint_and_resume_continues(toy_list, tmp_path):
    stopped = train(tiny_config(toy_list, tmp_path / "run", max_steps=4, ckpt_every=3, max_wall_s=0.0))
    assert stopped.steps == 1  # out of time after the first step: stopped there, not at a later checkpoint
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [checkpoint_path(tmp_path, 1).name]
    resumed = train(tiny_config(toy_list, tmp_path / "run", max_steps=4, ckpt_every=3))
    assert resumed.steps == 4 and [r["step"] for r in resumed.log] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_sigkilled_run_resumes_from_its_last_checkpoint(toy_list, tmp_path):
    import subprocess
    import sys

    cfg = dict(max_steps=4, ckpt_every=2)
    full = train(tiny_config(toy_list, tmp_path / "full", **cfg))
    killed = tiny_config(toy_list, tmp_path / "killed", **cfg).to_dict()
    script = ("import os, signal\nfrom facelift_lib.gslrm.train import TrainConfig, train\n"
              "def kill(rec):\n    if rec['step'] == 3:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
              f"train(TrainConfig(**{killed!r}), callback=kill)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # really killed, no Python cleanup ran
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == [checkpoint_path(tmp_path, 2).name]
    resumed = train(TrainConfig(**killed))
    assert [r["step"] for r in resumed.log] == [1, 2, 3, 4] and resumed.steps == 4
    assert [r["loss"] for r in resumed.log] == pytest.approx([r["loss"] for r in full.log], rel=1e-4, abs=1e-6)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(toy_list, tmp_path, monkeypatch):
    import facelift_lib.gslrm.train as T

    real_save, saves = torch.save, []

    def disk_full_on_second_save(obj, f, *a, **kw):
        saves.append(f)
        if len(saves) == 2:
            f.write(b"half a checkpoint")  # an open temp file (save_torch_atomic)
            raise OSError("No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(T.torch, "save", disk_full_on_second_save)
    with pytest.raises(OSError, match="No space"):
        train(tiny_config(toy_list, tmp_path, max_steps=4, ckpt_every=2))
    monkeypatch.setattr(T.torch, "save", real_save)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if "ckpt" in p.name) == [checkpoint_path(tmp_path, 2).name]
    resumed = train(tiny_config(toy_list, tmp_path, max_steps=4, ckpt_every=2))  # the step-2 file is whole
    assert resumed.steps == 4 and [r["step"] for r in resumed.log] == [1, 2, 3, 4]


def test_checkpoint_is_facelift_structured_and_loadable(toy_list, tmp_path):
    result = train(tiny_config(toy_list, tmp_path, max_steps=3))
    path = result.checkpoint
    assert path.name == "ckpt_0000000000000003.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "fwdbwd_pass_step", "param_update_step"} <= set(ckpt)
    assert ckpt["fwdbwd_pass_step"] == 3 and ckpt["param_update_step"] == 3
    assert set(ckpt["model"]) == set(GSLRM(GSLRMConfig(**TINY_MODEL)).state_dict())
    assert len(ckpt["optimizer"]["param_groups"]) == 2  # weight decay on >=2-D params only
    assert ckpt["optimizer"]["param_groups"][1]["weight_decay"] == 0.0
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file
    loaded = load_facelift_checkpoint(path, GSLRMConfig(**TINY_MODEL))
    for a, b in zip(loaded.parameters(), result.model.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_load_trained_model_predicts_like_the_trained_one(toy_list, tmp_path, finetune, init_ckpt):
    result = train(tiny_config(toy_list, tmp_path / "run", max_steps=3, finetune=finetune, lora_rank=4,
                               init_from=init_ckpt if finetune == "lora" else None))
    item = ViewsDataset(toy_list, 16, validate=False)[0]
    args = (item["images"][None, :5, :3], (item["K"][None, :5], item["w2c"][None, :5]))
    with torch.no_grad():
        expected = result.model.eval()(*args)
        for source in (tmp_path / "run", result.checkpoint):  # a run folder means its newest checkpoint
            got = load_trained_model(source)(*args)
            torch.testing.assert_close(got.means, expected.means, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(got.colors, expected.colors, atol=1e-5, rtol=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no ckpt_.*empty"):
        load_trained_model(tmp_path / "empty")
    foreign = tmp_path / "facelift_ckpt.pt"
    torch.save({"model": GSLRM(GSLRMConfig(**TINY_MODEL)).state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="no model_config.*load_facelift_checkpoint"):
        load_trained_model(foreign)


def test_steps_over_the_grad_norm_threshold_are_skipped(toy_list, tmp_path):
    torch.manual_seed(0)
    before = GSLRM(GSLRMConfig(**TINY_MODEL)).state_dict()
    result = train(tiny_config(toy_list, tmp_path, max_steps=2, skip_grad_norm=1e-12))
    assert [r["skipped"] for r in result.log] == [True, True]
    assert {r["skip_reason"] for r in result.log} == {"grad_norm"}
    assert result.log[-1]["param_update_step"] == 0 and result.skipped == 2
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # nothing applied (init is seeded by cfg.seed = 0)


def test_a_nan_loss_is_skipped_not_applied(toy_list, tmp_path, monkeypatch):
    import facelift_lib.gslrm.train as T

    real = T.reconstruction_losses

    def poisoned(*args, **kw):  # step 2 (and only it) produces a NaN loss, as a bad sample would
        terms = real(*args, **kw)
        poisoned.calls += 1
        if poisoned.calls == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    poisoned.calls = 0
    monkeypatch.setattr(T, "reconstruction_losses", poisoned)
    result = train(tiny_config(toy_list, tmp_path / "run", max_steps=3, batch_size=1))
    assert poisoned.calls == 3  # one loss per step, so step 2 got the NaN
    assert [r["skipped"] for r in result.log] == [False, True, False]
    assert result.log[1]["skip_reason"] == "nonfinite_loss"
    assert [r["param_update_step"] for r in result.log] == [1, 1, 2]  # the NaN step applied nothing
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_skip_reason():
    assert skip_reason(float("nan"), 1.0, 200) == "nonfinite_loss"
    assert skip_reason(1.0, float("inf"), 200) == "nonfinite_grad"
    assert skip_reason(1.0, 2808.0, 200) == "grad_norm"
    assert skip_reason(1.0, 3.0, 200) is None


def test_training_subset_keeps_foreground_and_global():
    alpha = torch.zeros(1, 2, 16, 16)
    alpha[0, 0, 5:8, 5:8] = 1
    expo = training_subset(alpha, 2 * 256 + 2, 0.25, torch.Generator().manual_seed(0))
    fg = expo[0, :512].reshape(2, 16, 16)
    assert (fg[0, 3:10, 3:10] == 1).all()                          # foreground, dilated by 2 px
    bg = torch.ones(2, 16, 16, dtype=torch.bool)
    bg[0, 3:10, 3:10] = False
    assert set(fg[bg].unique().tolist()) == {0.0, 4.0}             # background: left out or compensated
    assert 0.15 < (fg[bg] > 0).float().mean() < 0.35
    assert (expo[0, 512:] == 1).all()                               # global gaussians
    assert training_subset(alpha, 514, 1.0) is None


@pytest.mark.parametrize("mode", ["freeze_transformer", "lora"])
def test_finetune_modes_train_only_what_they_should(toy_list, tmp_path, mode, init_ckpt):
    start = torch.load(init_ckpt, map_location="cpu", weights_only=True)["model"]
    result = train(tiny_config(toy_list, tmp_path / "run", max_steps=3, finetune=mode, init_from=init_ckpt,
                               lora_rank=4))
    assert [r["step"] for r in result.log] == [1, 2, 3]  # init_from resets the training state
    after = result.model.state_dict()
    emb = "patch_embedder.1.weight"
    torch.testing.assert_close(after[emb], start[emb])  # never trained in these modes
    head = "pixel_gaussian_decoder.1.weight"
    assert not torch.allclose(after[head], start[head])
    qkv = "transformer_layers.0.attn.to_qkv.weight"
    changed = not torch.allclose(after[qkv], start[qkv])
    assert changed == (mode == "lora")  # LoRA's merged delta moves the transformer weights, freezing does not
    # the checkpoint holds plain FaceLift-named weights with LoRA merged in
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert set(ckpt["model"]) == set(start)
    assert ("lora_adapter" in ckpt) == (mode == "lora")
    loaded = load_facelift_checkpoint(result.checkpoint, GSLRMConfig(**TINY_MODEL))
    torch.testing.assert_close(loaded.state_dict()[qkv], after[qkv])


def test_lora_run_resumes(toy_list, tmp_path, init_ckpt):
    cfg = dict(finetune="lora", lora_rank=4, max_steps=4, ckpt_every=2, init_from=init_ckpt)
    full = train(tiny_config(toy_list, tmp_path / "full", **cfg))

    def kill_after_3(record):
        if record["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train(tiny_config(toy_list, tmp_path / "killed", **cfg), callback=kill_after_3)
    resumed = train(tiny_config(toy_list, tmp_path / "killed", **cfg))
    assert [r["loss"] for r in resumed.log] == pytest.approx([r["loss"] for r in full.log], rel=1e-4)


def test_resume_refuses_a_different_model(toy_list, tmp_path):
    train(tiny_config(toy_list, tmp_path, max_steps=3))
    with pytest.raises(Exception, match="another model config"):
        train(tiny_config(toy_list, tmp_path, max_steps=4, model=dict(TINY_MODEL, d=64)))


def test_config_loading(tmp_path):
    cfg = load_train_config({"max_steps": 7, "model": TINY_MODEL})
    assert cfg.max_steps == 7 and cfg.model_config().d == 32
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        load_train_config({"max_step": 7})
    with pytest.raises(ValueError, match="LOCAL folder"):
        load_train_config({"lpips_weight": 0.1})
    with pytest.raises(ValueError, match="finetune"):
        load_train_config({"finetune": "partial"})
    profile = tmp_path / "full.yaml"
    profile.write_text("profile: full\nout_dir: /data/out\nseed: 3\n05_gslrm:\n  max_steps: 9\n  data_source: synthetic\n")
    cfg = load_train_config(profile)
    assert cfg.train_list == "/data/out/synthetic/train.txt" and cfg.run_dir == "/data/out/gslrm/run"
    assert cfg.seed == 3 and cfg.max_steps == 9
    profile.write_text("profile: full\nout_dir: /data/out\n05_gslrm:\n  max_steps: 9\n")
    assert load_train_config(profile).train_list == "/data/out/data/train.txt"  # preprocessed by default
    flat = tmp_path / "train.yaml"
    flat.write_text(json.dumps({"max_steps": 5, "finetune": "lora", "init_from": "/models/ckpt.pt"}))
    assert load_train_config(flat).finetune == "lora"
    for mode in ("lora", "freeze_transformer"):  # adapting random weights is a mistake, not a run
        with pytest.raises(ValueError, match="init_from is None"):
            load_train_config({"finetune": mode})
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path / "nope.yaml")


def test_train_list_may_name_several_list_files(toy_list, tmp_path):
    """A recipe trains on the samples of several list files (e.g. one camera set each), in order."""
    from facelift_lib.io import read_list_file, write_list_file
    from facelift_lib.gslrm.train import training_samples

    dirs = read_list_file(toy_list)
    other = write_list_file(tmp_path / "other.txt", dirs[:1])
    assert training_samples(toy_list) == toy_list                       # one file: the dataset names it
    assert training_samples([toy_list, str(other)]) == dirs + dirs[:1]
    flat = tmp_path / "train.yaml"
    flat.write_text(json.dumps({"train_list": [toy_list, str(other)], "max_steps": 5}))
    assert load_train_config(flat).train_list == [toy_list, str(other)]
    result = train(tiny_config([toy_list, str(other)], tmp_path / "run", max_steps=2, ckpt_every=2))
    assert result.steps == 2
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        training_samples([toy_list, str(tmp_path / "nope.txt")])


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_cli_and_notebook_build_the_same_config(profile, monkeypatch):
    """One route from a profile to a GS-LRM run: the torchrun CLI (`load_train_config(params/<profile>.yaml)`) and
    notebook 05 (its parameters cell, with the profile's injected values, through `profile_train_config`) agree."""
    import ast
    import inspect
    import warnings

    from facelift_lib.gslrm.train import profile_train_config
    from facelift_lib.workbook import load_profile, notebook_inputs, notebook_parameters

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # profiles' out_dir is relative to the working directory, for the CLI and the runner
    notebook = repo / "notebooks" / "05_gslrm.py"
    defaults = {k: ast.literal_eval(v) for k, v in notebook_parameters(notebook).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a profile key the notebook does not declare would not reach it
        injected = notebook_inputs(load_profile(repo / "params" / f"{profile}.yaml"), "05_gslrm", list(defaults))
    params = {**defaults, **injected}
    args = list(inspect.signature(profile_train_config).parameters)
    assert set(args) <= set(params), f"notebook 05 lacks parameters {set(args) - set(params)}"
    source = notebook.read_text()
    call = source[source.index("cfg = profile_train_config("):]
    call = call[:call.index(")\n") + 1]
    for name in args:  # the notebook hands every argument its own parameter
        assert f"{name}={'out' if name == 'out_dir' else name}" in call, name
    notebook_cfg = profile_train_config(**{k: Path(params[k]) if k == "out_dir" else params[k] for k in args})
    cli_cfg = load_train_config(repo / "params" / f"{profile}.yaml")
    assert cli_cfg.to_dict() == notebook_cfg.to_dict()
    if profile == "smoke":  # the example: the CLI trained patch 8 / lr 4e-4 / 500 steps, 05 patch 4 / 1e-3 / 600
        # both fine-tune the shipped model (issue 14) with the recipe for that start
        assert (cli_cfg.model["patch_size"], cli_cfg.lr, cli_cfg.max_steps) == (8, SMOKE_FROM_SHIPPED["lr"],
                                                                                 SMOKE_FROM_SHIPPED["max_steps"])
        assert cli_cfg.image_size == cli_cfg.model["image_size"] == 128
        assert cli_cfg.init_from == str(shipped_path(DEFAULT_SHIPPED["gslrm"], "gslrm"))
    else:
        assert cli_cfg.model == {} and cli_cfg.ckpt_every == 1000 and cli_cfg.init_from is None


@pytest.fixture
def shipped_tiny(tmp_path, monkeypatch) -> tuple[Path, GSLRM]:
    """The tiny model shipped as the demo GS-LRM (DEFAULT_SHIPPED) into tmp_path/weights, which stands in for the
    repository's weights/ (what init_weights="shipped" reads)."""
    from facelift_lib import weights

    torch.manual_seed(2)
    model = GSLRM(GSLRMConfig(**TINY_MODEL))
    run = tmp_path / "shipped_run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": GSLRMConfig(**TINY_MODEL).to_dict(),
                "fwdbwd_pass_step": 3}, run / "checkpoints" / f"ckpt_{3:016d}.pt")
    (tmp_path / "weights").mkdir()
    path = ship(DEFAULT_SHIPPED["gslrm"], run, weights_dir=tmp_path / "weights", training_command="tests")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    return path, model


def test_profile_starts_from_the_shipped_weights_with_their_recipe(shipped_tiny, tmp_path):
    path, shipped = shipped_tiny
    cfg = profile_train_config(tmp_path / "out", image_size=16, model=TINY_MODEL)  # init_weights="shipped"
    assert cfg.init_from == str(path) and cfg.model_config() == GSLRMConfig(**TINY_MODEL)
    assert (cfg.lr, cfg.max_steps, cfg.ckpt_every) == (SMOKE_FROM_SHIPPED["lr"], SMOKE_FROM_SHIPPED["max_steps"],
                                                       SMOKE_FROM_SHIPPED["max_steps"] // 4)
    for k, v in build_model(cfg).state_dict().items():  # training starts from the shipped weights
        assert torch.equal(v, shipped.state_dict()[k]), k
    scratch = profile_train_config(tmp_path / "out", image_size=16, model=TINY_MODEL, init_weights=None)
    assert scratch.init_from is None
    assert (scratch.lr, scratch.max_steps) == (SMOKE_FROM_SCRATCH["lr"], SMOKE_FROM_SCRATCH["max_steps"])
    # fine-tuning takes a lower rate and fewer steps than training from scratch (05 stays as fast)
    assert cfg.lr < scratch.lr and cfg.max_steps < scratch.max_steps
    given = profile_train_config(tmp_path / "out", image_size=16, model=TINY_MODEL, lr=5e-4, max_steps=8)
    assert (given.lr, given.max_steps, given.ckpt_every) == (5e-4, 8, 2)  # given values win over the recipe


def test_profile_refuses_another_model_or_two_starts(shipped_tiny, tmp_path):
    path, _ = shipped_tiny
    with pytest.raises(ValueError, match=r"not the model of the shipped weights .*gslrm_demo_128\.pt.*'d': \(64, 32\)"):
        profile_train_config(tmp_path / "out", model={**TINY_MODEL, "d": 64})
    with pytest.raises(ValueError, match=r"init_weights='shipped' and init_from='/models/ckpt\.pt'"):
        profile_train_config(tmp_path / "out", model=TINY_MODEL, init_from="/models/ckpt.pt")
    facelift = profile_train_config(tmp_path / "out", model={}, init_weights=None, init_from="/models/ckpt.pt")
    assert facelift.init_from == "/models/ckpt.pt"  # the full profile's start
    path.unlink()
    with pytest.raises(ShippedWeightsError, match=r"gslrm_demo_128\.pt not found"):
        profile_train_config(tmp_path / "out", model=TINY_MODEL)


def test_dataset_resizes_and_scales_intrinsics(toy_list):
    big = ViewsDataset(toy_list, 16, validate=False)[0]
    small = ViewsDataset(toy_list, 8, validate=False)[0]
    assert small["images"].shape == (6, 4, 8, 8)
    torch.testing.assert_close(small["K"][:, :2], big["K"][:, :2] / 2)
    torch.testing.assert_close(small["images"][:, 3].mean(), big["images"][:, 3].mean(), atol=0.02, rtol=0)


@pytest.mark.slow
def test_torchrun_ddp_two_processes_same_trainer(toy_list, tmp_path):
    """`torchrun --nproc_per_node 2 -m facelift_lib.gslrm.train params.yaml` on CPU (gloo): rank 0 logs and
    checkpoints, the step count is right, and the checkpoint loads as a plain FaceLift-named model."""
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    cfg = tiny_config(toy_list, tmp_path / "run", max_steps=3, ckpt_every=2).to_dict()
    params.write_text(json.dumps(cfg))  # JSON is YAML
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "facelift_lib.gslrm.train", str(params)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 3 steps" in out.stdout
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_0000000000000002.pt",
                                                                    "ckpt_0000000000000003.pt"]
    load_facelift_checkpoint(list_checkpoints(tmp_path / "run")[-1], GSLRMConfig(**TINY_MODEL))


@pytest.mark.slow
def test_trained_model_beats_both_baselines(tmp_path):
    """A tiny model trained briefly on a tiny toy dataset beats, on held-out views of unseen samples, the
    empty render and the untrained model on Mask IoU and masked PSNR (same evaluation code for all)."""
    from facelift_lib.io import write_list_file
    from facelift_lib.metrics import background_only, evaluate

    _, dirs = write_toy_dataset(tmp_path / "toy", n_samples=6, size=32, seed=2, n_gaussians=1500)
    train_list = write_list_file(tmp_path / "toy" / "train.txt", dirs[:4])
    val = ViewsDataset(write_list_file(tmp_path / "toy" / "val.txt", dirs[4:]), 32, validate=False)
    # patch 2: a token carries 2*2*9 = 36 input values, well under d = 64, so pixels can be copied sharply
    model_cfg = dict(image_size=32, patch_size=2, d=64, n_layers=2, n_heads=2)
    result = train(TrainConfig(train_list=str(train_list), run_dir=str(tmp_path / "run"), image_size=32,
                               model=model_cfg, max_steps=200, warmup_steps=20, lr=2e-3, views_per_step=2,
                               ssim_weight=0.2, background_gaussian_fraction=0.25, ckpt_every=10**6,
                               progress=False, validate_data=False))
    torch.manual_seed(0)
    scores = {name: evaluate(m, val, views="held_out", progress=False)[1] for name, m in
              (("empty", background_only), ("untrained", GSLRM(GSLRMConfig(**model_cfg))), ("trained", result.model))}
    for base in ("empty", "untrained"):
        for metric in ("mask_iou", "psnr_masked"):
            assert scores["trained"][metric] > scores[base][metric], (metric, base, scores)


def test_random_yaw_turns_the_cameras_with_the_world_so_pixels_stay():
    import math

    from facelift_lib.cameras import standard_cameras
    from facelift_lib.gaussians import Gaussians
    from facelift_lib.gslrm.train import yaw_transform
    from facelift_lib.metrics import render_views

    gen = torch.Generator().manual_seed(0)
    n = 200
    means = torch.randn(n, 3, generator=gen) * torch.tensor([0.4, 0.15, 0.1])
    isotropic = dict(quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),  # round blobs: turning needs no quat change
                     scales=(torch.rand(n, 1, generator=gen) * 0.05 + 0.01).expand(n, 3),
                     opacities=torch.full((n,), 0.8), colors=torch.rand(n, 3, generator=gen))
    angle = 1.1
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = yaw_transform(torch.tensor([angle]))[0, 0]  # [4,4]
    cams = standard_cameras("mouse_standard_6view", 32)
    K, w2c = cams.K.float(), cams.w2c.float()
    rgb_a, alpha_a = render_views(Gaussians(means=means, **isotropic), K, w2c, 32, torch.ones(3))
    rgb_b, alpha_b = render_views(Gaussians(means=means @ R.T, **isotropic), K, w2c @ T, 32, torch.ones(3))
    torch.testing.assert_close(rgb_b, rgb_a, atol=1e-3, rtol=0)
    torch.testing.assert_close(alpha_b, alpha_a, atol=1e-3, rtol=0)
    centres = torch.linalg.inv(w2c @ T)[:, :3, 3]
    torch.testing.assert_close(centres, cams.centers.float() @ R.T, atol=1e-5, rtol=0)  # the cameras turned by R
    assert not torch.allclose(centres, cams.centers.float(), atol=1e-2)


def test_init_from_refuses_other_activation_constants_and_doubles_resolution(toy_list, tmp_path):
    """init_from's model_config must be the recipe's model (the shapes alone would load a model with other
    depth or scale constants silently); init_double_resolution starts from `double_resolution` of it."""
    import math

    from facelift_lib.gslrm.model import double_resolution

    torch.manual_seed(3)
    half = GSLRM(GSLRMConfig(image_size=8, patch_size=2, d=32, n_layers=1, n_heads=2, depth_range=1.0))
    path = tmp_path / "half.pt"
    torch.save({"model": half.state_dict(), "model_config": half.config.to_dict()}, path)
    doubled = dict(TINY_MODEL, depth_range=1.0, scale_bias=-2.3 - math.log(2), scale_max_log=-1.2 - math.log(2))
    model = build_model(tiny_config(toy_list, tmp_path / "a", model=doubled, init_from=str(path),
                                    init_double_resolution=True))
    for k, v in double_resolution(half).state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    with pytest.raises(ValueError, match="scale_bias"):  # the recipe forgot the halved scales
        build_model(tiny_config(toy_list, tmp_path / "b", model=dict(TINY_MODEL, depth_range=1.0),
                                init_from=str(path), init_double_resolution=True))
    same = tmp_path / "same.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict()}, same)
    with pytest.raises(ValueError, match="depth_range"):  # same shapes, another depth range
        build_model(tiny_config(toy_list, tmp_path / "c", model=dict(doubled, depth_range=1.8), init_from=str(same)))
    with pytest.raises(ValueError, match="init_from is None"):
        tiny_config(toy_list, tmp_path / "d", init_double_resolution=True)
