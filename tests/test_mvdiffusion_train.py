"""Training: losses, identity-mapping score, checkpoints/resume/errors, both model kinds (tiny sizes)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from facelift_lib.cameras import standard_cameras
from facelift_lib.io import save_sample, write_list_file
from facelift_lib.mvdiffusion import load_checkpoint_pipeline
from facelift_lib.mvdiffusion import train as mvtrain
from facelift_lib.mvdiffusion.model import to_model_pixels
from facelift_lib.mvdiffusion.pipeline import model_from_checkpoint, read_checkpoint, write_tiny_facelift_pipeline
from facelift_lib.mvdiffusion.train import (FACELIFT_FINETUNE, SHIPPED_FINETUNE, MultiViewDataset, TrainParams,
                                            build_model, identity_mapping_score, min_snr_weights, params_from_yaml,
                                            profile_train_params, read_steps_and_validations, sample_timesteps, train)
from facelift_lib.training import list_checkpoints
from facelift_lib.weights import ship

SIZE = 16
TINY = {"image_size": SIZE, "block_out_channels": [8, 16], "cross_attention_dim": 16, "attention_head_dim": 8,
        "view_embedding": "camera"}


def blob_views(seed: int, size: int = SIZE) -> torch.Tensor:
    """[6,4,S,S] RGBA: a coloured ellipse that moves with the view (a stand-in for a turning object)."""
    g = torch.Generator().manual_seed(seed)
    color = torch.rand(3, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    views = []
    for v in range(6):
        cx = 0.4 * math.cos(v * math.pi / 3)
        alpha = ((((xs - cx) / 0.5) ** 2 + (ys / 0.3) ** 2) < 1).float()
        rgb = color[:, None, None] * (0.6 + 0.4 * (xs[None] + 1) / 2)
        views.append(torch.cat([rgb, alpha[None]]))
    return torch.stack(views)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvdata")
    cams = standard_cameras("mouse_standard_6view", SIZE)
    dirs = [save_sample(root / f"s{i}", blob_views(i), cams) for i in range(3)]
    write_list_file(root / "train.txt", dirs[:2])
    write_list_file(root / "val.txt", dirs[2:])
    return root


def tiny_params(dataset, run_dir, **kw) -> TrainParams:
    base = dict(run_dir=str(run_dir), train_list=str(dataset / "train.txt"), val_list=str(dataset / "val.txt"),
                pixel_model=TINY, max_steps=4, batch_size=2, warmup_steps=1, checkpoint_every=2, val_every=4,
                val_inference_steps=2, log_every=1, progress=False)
    base.update(kw)
    return TrainParams(**base)


def test_min_snr_weights_follow_the_formula():
    ac = torch.linspace(0.999, 0.001, 1000)
    t = torch.tensor([0, 500, 999])
    snr = ac[t] / (1 - ac[t])
    w_v = min_snr_weights(ac, t, 5.0, "v_prediction")
    torch.testing.assert_close(w_v, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    assert w_v[0] < 0.01 and w_v[2] < 0.01  # clean end clipped by gamma, noisy end small
    w_eps = min_snr_weights(ac, t, 5.0, "epsilon")
    torch.testing.assert_close(w_eps, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert torch.equal(min_snr_weights(ac, t, None, "v_prediction"), torch.ones(3))


def test_sample_timesteps_power_one_is_the_uniform_draw_and_two_favours_noise():
    T = 1000
    uniform = sample_timesteps(64, T, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(uniform, torch.randint(0, T, (64,), generator=torch.Generator().manual_seed(3)))  # runs stay bitwise
    t = sample_timesteps(200_000, T, 2.0, torch.Generator().manual_seed(0)).double()
    assert 0 <= t.min() and t.max() <= T - 1
    # density ~ t: mean 2T/3, P(t >= 0.9 T) = 1 - 0.81, P(t < 0.1 T) = 0.01 (uniform: T/2, 0.1, 0.1)
    assert abs(t.mean().item() / T - 2 / 3) < 0.005
    assert abs((t >= 900).double().mean().item() - 0.19) < 0.005
    assert abs((t < 100).double().mean().item() - 0.01) < 0.002
    with pytest.raises(ValueError, match="timestep_power"):
        sample_timesteps(4, T, 0.0)


def test_timestep_power_reaches_the_training_loss(dataset, tmp_path, monkeypatch):
    real, powers = mvtrain.sample_timesteps, []

    def recording(batch, T, power=1.0, generator=None):
        powers.append(power)
        return real(batch, T, power, generator)
    monkeypatch.setattr(mvtrain, "sample_timesteps", recording)
    train(tiny_params(dataset, tmp_path / "run", max_steps=2, val_every=0, timestep_power=2.0))
    assert powers == [2.0, 2.0]


def test_identity_score_flags_copying_and_not_turning():
    gt = torch.stack([blob_views(i) for i in range(2)])
    gt[:, :, :3] = gt[:, :, :3] * gt[:, :, 3:] + 1 - gt[:, :, 3:]  # RGB on white
    ref = gt[:, 0]
    copied = ref[:, None].expand_as(gt).clone()
    bad = identity_mapping_score(copied, ref, gt)
    good = identity_mapping_score(gt.clone(), ref, gt)
    assert bad["collapse"] and bad["score_db"] > 10 and bad["identity_fraction"] == 1.0
    assert not good["collapse"] and good["score_db"] < -10 and good["identity_fraction"] == 0.0
    assert good["views"] == [1, 2, 3, 4, 5]
    assert good["to_reference_db"] == pytest.approx(good["gt_to_reference_db"])


def test_train_checkpoint_resume_and_pipeline(dataset, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_params(dataset, run))
    assert [h["step"] for h in result.history] == [1, 2, 3, 4]
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert len(result.validations) == 1
    val = result.validations[0]
    assert set(val["identity"]) >= {"score_db", "identity_fraction", "collapse", "to_reference_db"}
    assert len(val["quality"]["psnr_masked"]) == 6 and len(val["quality"]["mask_iou"]) == 6
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["ckpt_0000000000000002.pt", "ckpt_0000000000000004.pt"]  # nothing half-written (.tmp) left behind
    assert (run / "samples" / "step_00000004.png").is_file()
    ck = read_checkpoint(result.last_checkpoint)
    assert ck["step"] == 4 and ck["kind"] == "pixel" and ck["camera_type"] == "mouse_standard_6view"
    assert ck["params"]["reference_view_idx"] == 0 and not ck["params"]["random_reference"]

    resumed = train(tiny_params(dataset, run, max_steps=6, resume="latest"))
    assert [h["step"] for h in resumed.history] == [5, 6]
    steps, vals = read_steps_and_validations(run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6] and [v["step"] for v in vals] == [4, 6]
    assert read_checkpoint(resumed.last_checkpoint)["step"] == 6

    pipe = load_checkpoint_pipeline(resumed.last_checkpoint)
    out = pipe(torch.rand(1, 4, SIZE, SIZE), num_inference_steps=2, progress=False)
    assert out.shape == (1, 6, 4, SIZE, SIZE)

    with pytest.raises(FileExistsError, match="resume='latest'"):  # a fresh start must not mix with old checkpoints
        train(tiny_params(dataset, run))
    fresh = train(tiny_params(dataset, run, max_steps=2, overwrite=True))
    assert [s["step"] for s in read_steps_and_validations(run)[0]] == [1, 2]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt_0000000000000002.pt"]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_00000002.png"]
    assert len(fresh.validations) == 1


def test_a_nonfinite_loss_skips_the_step_and_training_goes_on(dataset, tmp_path, monkeypatch, capsys):
    """The shared policy (training.skip_reason), as in GS-LRM: not applied, logged with its reason, printed."""
    real, calls = mvtrain.diffusion_loss, []

    def nan_on_second_step(*a, **kw):
        calls.append(1)
        loss = real(*a, **kw)
        return loss * float("nan") if len(calls) == 2 else loss
    monkeypatch.setattr(mvtrain, "diffusion_loss", nan_on_second_step)
    run = tmp_path / "run"
    result = train(tiny_params(dataset, run, max_steps=3, checkpoint_every=1, val_every=0))
    assert [h["step"] for h in result.history] == [1, 2, 3]
    assert [h.get("skip_reason") for h in result.history] == [None, "nonfinite_loss", None]
    assert "step 2 skipped (nonfinite_loss)" in capsys.readouterr().out
    weights = [read_checkpoint(run / "checkpoints" / f"ckpt_{k:016d}.pt")["model"] for k in (1, 2, 3)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2 applied nothing
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # step 3 trained again


def test_training_is_deterministic(dataset, tmp_path):
    a = train(tiny_params(dataset, tmp_path / "a", max_steps=2, val_every=0))
    b = train(tiny_params(dataset, tmp_path / "b", max_steps=2, val_every=0))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_missing_paths_are_errors(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train(tiny_params(dataset, tmp_path / "r", resume=str(tmp_path / "nope.pt")))
    with pytest.raises(FileNotFoundError, match="init.pt"):
        train(tiny_params(dataset, tmp_path / "r", init_from=str(tmp_path / "init.pt")))
    with pytest.raises(FileNotFoundError, match="no_pipeline"):
        train(tiny_params(dataset, tmp_path / "r", model="facelift", init_from=str(tmp_path / "no_pipeline")))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint_pipeline(tmp_path / "missing.pt")


def test_params_from_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("out_dir: outputs/x\nseed: 7\n03_mvdiffusion:\n  image_size: 48\n"
                                     "  init_weights: null\n  render_size: 96\n  train_overrides: {max_steps: 12}\n")
    p = params_from_yaml(tmp_path / "p.yaml")
    assert (p.max_steps, p.seed, p.model, p.pixel_model) == (12, 7, "pixel", {"image_size": 48})
    assert p.run_dir == "outputs/x/mvdiffusion/run" and p.train_list == "outputs/x/mvdiffusion/data/train.txt"
    (tmp_path / "f.yaml").write_text("03_mvdiffusion:\n  facelift_pipeline: /models/facelift\n"
                                     "  init_weights: null\n  train_overrides: {max_steps: 9}\n")
    f = params_from_yaml(tmp_path / "f.yaml")
    assert (f.model, f.init_from, f.lr, f.warmup_steps, f.max_steps) == ("facelift", "/models/facelift", 5e-6, 500, 9)
    with pytest.raises(KeyError, match="max_stepz"):
        profile_train_params("outputs/x", overrides={"max_stepz": 3})


@pytest.fixture
def shipped_tiny_mv(tiny_mv_checkpoint, tmp_path, monkeypatch) -> tuple[Path, dict]:
    """(file, model_config) of a tiny pixel model shipped as mvdiffusion_demo into tmp_path/weights, which stands
    in for the repository's weights/ (what init_weights="shipped" reads)."""
    from facelift_lib import weights

    (tmp_path / "weights").mkdir()
    path = ship("mvdiffusion_demo", tiny_mv_checkpoint[0], weights_dir=tmp_path / "weights", training_command="tests")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    return path, json.loads((tmp_path / "weights" / "manifest.json").read_text())["mvdiffusion_demo"]["model_config"]


def test_profile_fine_tunes_the_shipped_model_with_its_recipe(shipped_tiny_mv, tmp_path):
    path, config = shipped_tiny_mv
    p = profile_train_params(tmp_path / "out", image_size=config["image_size"])  # init_weights="shipped"
    assert p.model == "pixel" and p.init_from == str(path) and p.pixel_model == config
    assert {k: getattr(p, k) for k in SHIPPED_FINETUNE} == SHIPPED_FINETUNE
    assert p.lr < TrainParams().lr  # fine-tuning, not the from-scratch rate
    model, _ = build_model(p)  # the shipped (EMA) weights, loaded into the shipped config
    shipped = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())
    profile = tmp_path / "p.yaml"  # the CLI's route: a profile without the key means notebook 03's default
    profile.write_text(f"out_dir: {tmp_path / 'out'}\n03_mvdiffusion:\n  image_size: {config['image_size']}\n")
    assert params_from_yaml(profile) == p
    profile.write_text(f"out_dir: {tmp_path / 'out'}\n03_mvdiffusion:\n  init_weights: null\n  image_size: 16\n")
    scratch = params_from_yaml(profile)
    assert scratch.init_from is None and scratch.pixel_model == {"image_size": 16} and scratch.lr == TrainParams().lr


def test_profile_refuses_another_model_or_two_starts(shipped_tiny_mv, tmp_path):
    path, config = shipped_tiny_mv
    with pytest.raises(ValueError, match=r"facelift_pipeline='/models/facelift' and init_weights='shipped'"):
        profile_train_params(tmp_path / "out", facelift_pipeline="/models/facelift")
    with pytest.raises(ValueError, match=rf"image_size=48 but the shipped weights .*mvdiffusion_demo\.pt are a "
                                         rf"{config['image_size']}² model"):
        profile_train_params(tmp_path / "out", image_size=48)
    with pytest.raises(ValueError, match=r"pixel_model=\{'image_size': 16\} differs from the shipped"):
        profile_train_params(tmp_path / "out", overrides={"pixel_model": {"image_size": 16}})
    with pytest.raises(ValueError, match=r"init_from='/other\.pt' and init_weights"):
        profile_train_params(tmp_path / "out", overrides={"init_from": "/other.pt"})


def test_finetune_facelift_layout_from_local_folder(dataset, tmp_path):
    """The full-profile code path (init_from a FaceLift folder) on tiny random components."""
    pipe_dir = write_tiny_facelift_pipeline(tmp_path / "pipe", image_size=SIZE, facelift_block_names=True)
    emb = torch.randn(6, 5, 32).half()
    torch.save(emb, tmp_path / "emb.pt")
    run = tmp_path / "ft"
    result = train(tiny_params(dataset, run, model="facelift", init_from=str(pipe_dir),
                               view_embeddings=str(tmp_path / "emb.pt"), learn_view_embeddings=True, lr=5e-6,
                               max_steps=2, val_every=2, val_samples=1))
    assert len(result.history) == 2 and len(result.validations) == 1
    ck = read_checkpoint(result.last_checkpoint)
    assert ck["kind"] == "latent" and ck["model_config"]["source"] == str(pipe_dir.resolve())
    assert not torch.equal(ck["view_embeddings"], emb.float())  # new per-view embeddings were learned
    before = read_checkpoint(result.last_checkpoint)["model"]["conv_in.weight"]
    pipe = load_checkpoint_pipeline(result.last_checkpoint, use_ema=False)
    assert torch.equal(pipe.model.unet.state_dict()["conv_in.weight"], before)
    out = pipe(torch.rand(1, 4, 32, 32), num_inference_steps=2, progress=False)
    assert out.shape == (1, 6, 4, SIZE, SIZE)


def test_facelift_condition_dropout_has_its_three_cases_at_five_percent_each():
    """FaceLift drops the CLIP condition alone, both, or the reference latent alone, 5 % each."""
    drop_ref, drop_clip = mvtrain.condition_drop_masks(200_000, "latent", 0.05, torch.Generator().manual_seed(0))
    rates = {"clip alone": (drop_clip & ~drop_ref), "both": (drop_clip & drop_ref), "reference alone": (drop_ref & ~drop_clip)}
    for case, mask in rates.items():
        assert abs(mask.float().mean().item() - 0.05) < 0.003, case
    drop_ref, drop_clip = mvtrain.condition_drop_masks(200_000, "pixel", 0.1, torch.Generator().manual_seed(0))
    assert abs(drop_ref.float().mean().item() - 0.1) < 0.003 and not drop_clip.any()
    assert FACELIFT_FINETUNE["cond_drop_prob"] == 0.05 and FACELIFT_FINETUNE["random_background"]
    with pytest.raises(ValueError, match="cond_drop_prob"):
        TrainParams(model="facelift", init_from="x", cond_drop_prob=0.4)


def test_backgrounds_are_white_black_or_grey_under_straight_alpha():
    rgba = torch.rand(3, 6, 4, 8, 8)
    bg = mvtrain.random_backgrounds(3000, torch.Generator().manual_seed(0))
    assert {tuple(c) for c in bg.tolist()} == set(mvtrain.RANDOM_BACKGROUNDS)
    out = mvtrain.on_backgrounds(rgba, bg[:3])
    a = rgba[:, :, 3:4]
    torch.testing.assert_close(out[:, :, :3], rgba[:, :, :3] * a + bg[:3, None, :, None, None] * (1 - a))
    assert (out[:, :, 3] == 1).all()


def test_finetuning_facelift_conditions_as_facelift_trained(dataset, tmp_path, monkeypatch):
    """Through train(): every dropped CLIP condition is an all-zero class label, every kept one has a different
    noised embedding per view, every dropped reference is a zero latent, and the images reach the VAE on a
    white, black or grey background."""
    pipe_dir = write_tiny_facelift_pipeline(tmp_path / "pipe", image_size=SIZE, facelift_block_names=True)
    torch.save(torch.randn(6, 5, 32), tmp_path / "emb.pt")
    seen: list[dict[str, torch.Tensor]] = []
    encoded: list[torch.Tensor] = []
    build = mvtrain.build_model

    def build_and_spy(params):
        model, scheduler = build(params)
        model.register_forward_pre_hook(lambda m, args: seen.append({k: v.clone() for k, v in args[2].items()}))
        encode = model.encode_views
        model.encode_views = lambda images: (encoded.append(images.clone()), encode(images))[1]
        return model, scheduler

    monkeypatch.setattr(mvtrain, "build_model", build_and_spy)
    masks: list[tuple[torch.Tensor, torch.Tensor]] = []
    draw = mvtrain.condition_drop_masks
    monkeypatch.setattr(mvtrain, "condition_drop_masks", lambda *a, **k: masks.append(draw(*a, **k)) or masks[-1])
    train(tiny_params(dataset, tmp_path / "ft", model="facelift", init_from=str(pipe_dir),
                      view_embeddings=str(tmp_path / "emb.pt"), max_steps=6, val_every=0, cond_drop_prob=0.2,
                      random_background=True, seed=0))
    labels = torch.cat([c["class_labels"] for c in seen])          # [steps*B, V, 2D]
    refs = torch.cat([c["reference"] for c in seen]).flatten(1)    # [steps*B, ...]
    drop_ref, drop_clip = (torch.cat(m) for m in zip(*masks))
    assert drop_clip.any() and drop_ref.any() and not (drop_clip | drop_ref).all()  # this seed shows every case
    assert torch.equal((labels == 0).flatten(1).all(1), drop_clip)  # dropped CLIP = the whole label zero
    assert torch.equal((refs == 0).all(1), drop_ref)                 # dropped reference = zero latent
    kept = labels[~drop_clip]
    assert (kept[:, 1:] != kept[:, :1]).any(-1).all()  # one noise row per view
    corners = torch.cat([e.flatten(0, -4)[:, :3, 0, 0] for e in encoded])  # blob_views' corners are background
    found = {tuple(round(v, 3) for v in c) for c in corners.tolist()}
    assert found <= set(mvtrain.RANDOM_BACKGROUNDS) and len(found) > 1  # random, not always white


def test_training_views_smaller_than_the_model_are_an_error(dataset, tmp_path):
    with pytest.raises(ValueError, match="render_size"):
        train(tiny_params(dataset, tmp_path / "big", pixel_model={**TINY, "image_size": 32}))


# --- resume ---------------------------------------------------------------------------------------------------
def test_resume_latest_without_checkpoints_starts_fresh(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    # a run killed before its first checkpoint leaves a log and nothing to resume from
    (run / "log.jsonl").write_text(json.dumps({"step": 7, "loss": 1.0}) + "\n")
    result = train(tiny_params(dataset, run, max_steps=2, val_every=0, resume="latest"))
    err = capsys.readouterr().out
    assert "no checkpoints" in err and "starting fresh" in err
    assert [h["step"] for h in result.history] == [1, 2]
    assert [s["step"] for s in read_steps_and_validations(run)[0]] == [1, 2]  # the stale entry went with the fresh start
    assert read_checkpoint(result.last_checkpoint)["step"] == 2


def test_resume_latest_with_a_checkpoint_continues_it(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_params(dataset, run, max_steps=2, val_every=0))
    capsys.readouterr()
    resumed = train(tiny_params(dataset, run, max_steps=3, val_every=0, resume="latest"))
    assert "resuming from" in capsys.readouterr().out
    assert [h["step"] for h in resumed.history] == [3]


def test_resume_from_a_missing_explicit_path_is_an_error(dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_params(dataset, run, max_steps=2, val_every=0))  # checkpoints exist, but not the one named
    with pytest.raises(FileNotFoundError, match="ckpt_0000000000000099.pt"):
        train(tiny_params(dataset, run, max_steps=3, resume=str(run / "checkpoints" / "ckpt_0000000000000099.pt")))


def test_resume_after_a_kill_does_not_log_steps_twice(dataset, tmp_path):
    """Killed after logging steps 3-4 and validating at 4 but before checkpoint 4: the resumed run redoes them."""
    run = tmp_path / "run"
    train(tiny_params(dataset, run, max_steps=4, checkpoint_every=2, val_every=2))
    (run / "checkpoints" / "ckpt_0000000000000004.pt").unlink()
    stale_sample = (run / "samples" / "step_00000004.pt").stat().st_mtime_ns
    resumed = train(tiny_params(dataset, run, max_steps=4, checkpoint_every=2, val_every=2, resume="latest"))
    assert [h["step"] for h in resumed.history] == [3, 4]
    steps, vals = read_steps_and_validations(run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and [v["step"] for v in vals] == [2, 4]
    assert (run / "samples" / "step_00000004.pt").stat().st_mtime_ns != stale_sample  # redone, not kept


# --- training behaviours ----------------------------------------------------------------------------------------
def spy_on_denoiser(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record every call train() makes into the model: the timesteps its UNet gets [B*V] and the reference
    condition [B,C,S,S] (zeros = dropped)."""
    calls: list[dict[str, torch.Tensor]] = []
    build = mvtrain.build_model

    def build_and_spy(params):
        model, scheduler = build(params)
        model.register_forward_pre_hook(lambda m, args: calls.append({"reference": args[2]["reference"].clone()}))
        model.unet.register_forward_pre_hook(lambda m, args: calls[-1].update(unet_t=args[1].clone()))
        return model, scheduler

    monkeypatch.setattr(mvtrain, "build_model", build_and_spy)
    return calls


def test_all_views_of_a_sample_share_one_timestep(dataset, tmp_path, monkeypatch):
    calls = spy_on_denoiser(monkeypatch)
    train(tiny_params(dataset, tmp_path / "run", max_steps=4, val_every=0))
    assert len(calls) == 4
    per_sample = torch.stack([c["unet_t"].view(-1, 6) for c in calls]).flatten(0, 1)  # [steps*B, V]
    assert (per_sample == per_sample[:, :1]).all()  # one timestep across the views of a sample
    assert per_sample[:, 0].unique().numel() > 1  # ... drawn anew per sample, not one constant


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_condition_dropout_follows_its_rate(dataset, tmp_path, monkeypatch, rate):
    calls = spy_on_denoiser(monkeypatch)
    train(tiny_params(dataset, tmp_path / "run", max_steps=3, val_every=0, cond_drop_prob=rate))
    dropped = torch.cat([(c["reference"] == 0).flatten(1).all(1) for c in calls])  # [steps*B]
    assert dropped.numel() == 6
    assert dropped.float().mean().item() == rate


def test_ema_is_the_decayed_average_of_the_live_weights(dataset, tmp_path):
    """Checkpoints after steps 1 and 2; EMA after step 2 = d * EMA_1 + (1 - d) * live_2 with d = ema_decay
    (diffusers' EMA warmup would allow 1 - 2**(-2/3) = 0.37 at the 2nd update, so the 0.3 cap rules)."""
    run = tmp_path / "run"
    train(tiny_params(dataset, run, max_steps=2, checkpoint_every=1, val_every=0, warmup_steps=0,
                      lr_schedule="constant", ema_decay=0.3))
    c1, c2 = (read_checkpoint(run / "checkpoints" / f"ckpt_{k:016d}.pt") for k in (1, 2))
    ema1, ema2 = (model_from_checkpoint(c, use_ema=True).trainable_parameters() for c in (c1, c2))
    live2 = model_from_checkpoint(c2, use_ema=False).trainable_parameters()
    assert any(not torch.equal(e, w) for e, w in zip(ema2, live2))
    for e1, e2, w2 in zip(ema1, ema2, live2):
        torch.testing.assert_close(e2, 0.3 * e1 + 0.7 * w2)


def test_learning_rate_warms_up_then_holds(dataset, tmp_path):
    result = train(tiny_params(dataset, tmp_path / "run", max_steps=6, warmup_steps=4, val_every=0, lr=1e-3,
                               lr_schedule="constant_with_warmup"))
    lrs = [h["lr"] for h in result.history]  # the rate for the next step, logged after each step
    assert lrs == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3])


def test_random_reference_changes_the_reference_view(dataset):
    views = MultiViewDataset(dataset / "train.txt", 6, SIZE).views(0)
    fixed = MultiViewDataset(dataset / "train.txt", 6, SIZE)
    rand = MultiViewDataset(dataset / "train.txt", 6, SIZE, random_reference=True, seed=1)
    assert {fixed[0]["ref_idx"] for _ in range(20)} == {0}
    draws = [rand[0] for _ in range(20)]
    assert len({d["ref_idx"] for d in draws}) > 1
    assert all(torch.equal(d["reference"], views[d["ref_idx"]]) for d in draws)


@pytest.mark.parametrize("random_reference", [False, True])
def test_random_reference_reaches_the_model(dataset, tmp_path, monkeypatch, random_reference):
    calls = spy_on_denoiser(monkeypatch)
    train(tiny_params(dataset, tmp_path / "run", max_steps=4, val_every=0, cond_drop_prob=0.0,
                      random_reference=random_reference))
    data = MultiViewDataset(dataset / "train.txt", 6, SIZE)
    view0 = [to_model_pixels(data.views(i)[0]) for i in range(len(data))]  # as the model sees a reference
    refs = torch.cat([c["reference"] for c in calls])  # [steps*B,C,S,S]
    assert refs.shape[0] == 8
    is_view0 = [any(torch.allclose(r, v, atol=1e-5) for v in view0) for r in refs]
    assert all(is_view0) != random_reference


# --- the full profile's settings ---------------------------------------------------------------------------------
FULL_YAML = Path(__file__).resolve().parents[1] / "params" / "full.yaml"


def test_full_profile_trains_the_small_model_at_its_own_rate():
    p = params_from_yaml(FULL_YAML)
    default = TrainParams()
    assert p.model == "pixel" and p.resume == "latest"
    assert (p.lr, p.warmup_steps, p.lr_schedule) == (default.lr, default.warmup_steps, default.lr_schedule)


def test_full_profile_with_a_facelift_pipeline_keeps_the_finetune_recipe(tmp_path):
    data = yaml.safe_load(FULL_YAML.read_text())
    data["03_mvdiffusion"]["facelift_pipeline"] = "/models/facelift"
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(data))
    p = params_from_yaml(tmp_path / "full.yaml")
    assert p.model == "facelift" and p.resume == "latest"
    for key in ("lr", "warmup_steps", "lr_schedule", "max_steps", "batch_size"):
        assert getattr(p, key) == FACELIFT_FINETUNE[key], key


@pytest.mark.slow
def test_torchrun_two_processes_same_trainer(dataset, tmp_path):
    """`torchrun --nproc_per_node 2 -m facelift_lib.mvdiffusion.train profile.yaml` on CPU (gloo): the same
    train() as the notebook; one log and one set of checkpoints (the main process writes them)."""
    import subprocess
    import sys

    run = tmp_path / "out" / "mvdiffusion" / "run"
    overrides = dict(train_list=str(dataset / "train.txt"), val_list=None, pixel_model=TINY, max_steps=4,
                     batch_size=1, warmup_steps=1, checkpoint_every=2, val_every=0, log_every=1, progress=False)
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"profile": "t", "out_dir": str(tmp_path / "out"), "seed": 0,
                                       "03_mvdiffusion": {"init_weights": None, "train_overrides": overrides}}))
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29519", "-m", "facelift_lib.mvdiffusion.train", str(profile)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("last checkpoint:") == 2  # both ranks finish train() ...
    steps, _ = read_steps_and_validations(run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # ... and one of them logs
    assert len(list_checkpoints(run)) == 2
    load_checkpoint_pipeline(list_checkpoints(run)[-1])


def test_recipe_params_reads_the_shipped_recipe_and_refuses_unknown_keys(tmp_path):
    from pathlib import Path

    from facelift_lib.mvdiffusion.train import recipe_params

    recipe = Path(__file__).resolve().parents[1] / "weights" / "recipes" / "mvdiffusion_demo.yaml"
    params = recipe_params(recipe)
    assert params.model == "pixel" and params.resume == "latest" and params.run_dir.startswith("outputs/recipes/")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    with pytest.raises(KeyError, match=r"bad\.yaml: unknown TrainParams fields \['max_stepz'\]"):
        recipe_params(bad)


def test_stop_at_step_keeps_the_schedule_of_max_steps_and_resumes_bitwise(dataset, tmp_path):
    """stop_at_step stops with a checkpoint while the lr still follows max_steps; resuming it (any max_steps, as the
    shipped diffusion run switched 5000 -> 4000 at step 1000) is what a run stopped there any other way gives."""
    whole = train(tiny_params(dataset, tmp_path / "whole", max_steps=6, val_every=0, checkpoint_every=100,
                              log_every=1))
    stopped = train(tiny_params(dataset, tmp_path / "stopped", max_steps=6, stop_at_step=3, val_every=0,
                                checkpoint_every=100, log_every=1))
    assert [h["step"] for h in stopped.history] == [1, 2, 3]
    assert read_checkpoint(stopped.last_checkpoint)["step"] == 3
    assert [h["lr"] for h in stopped.history] == [h["lr"] for h in whole.history[:3]]  # max_steps 6's schedule
    assert [h["loss"] for h in stopped.history] == [h["loss"] for h in whole.history[:3]]
    again = train(tiny_params(dataset, tmp_path / "again", max_steps=6, stop_at_step=3, val_every=0,
                              checkpoint_every=100, log_every=1))
    rerun = train(tiny_params(dataset, tmp_path / "again", max_steps=6, stop_at_step=3, val_every=0,
                              checkpoint_every=100, log_every=1, resume="latest"))
    assert rerun.history == [] and read_checkpoint(rerun.last_checkpoint)["step"] == 3  # already there: no step
    a = train(tiny_params(dataset, tmp_path / "stopped", max_steps=5, val_every=0, checkpoint_every=100,
                          log_every=1, resume="latest"))
    b = train(tiny_params(dataset, tmp_path / "again", max_steps=5, val_every=0, checkpoint_every=100,
                          log_every=1, resume="latest"))
    assert [h["step"] for h in a.history] == [4, 5]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]  # deterministic from the stop
    wa, wb = read_checkpoint(a.last_checkpoint)["model"], read_checkpoint(b.last_checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_list_scheduler_defaults_in_a_stable_order(dataset, tmp_path):
    # diffusers keeps `_use_default_values` in set order, which changes with each process's string hashing:
    # two runs of one recipe wrote checkpoints (and shipped files) whose bytes differed there alone
    from facelift_lib.mvdiffusion.train import stable_scheduler_config
    assert stable_scheduler_config({"_use_default_values": ["b", "a"], "beta_end": 0.02}) == \
        {"_use_default_values": ["a", "b"], "beta_end": 0.02}
    ckpt = read_checkpoint(train(tiny_params(dataset, tmp_path / "run", max_steps=1, val_every=0)).last_checkpoint)
    listed = ckpt["noise_scheduler_config"].get("_use_default_values", [])
    assert listed == sorted(listed)


def test_a_resumed_run_is_the_uninterrupted_run(dataset, tmp_path):
    """Stopped at step 3 and resumed to 5, a run sees the batches (and random references) of the run that never
    stopped: the data order goes on from where it was (`fast_forward`), so losses and weights are bitwise the same.
    (The shipped diffusion run 4 stopped at 1000 before this, and its re-run parted from it at step 1010.)"""
    kw = dict(max_steps=5, batch_size=1, random_reference=True, val_every=0, checkpoint_every=100, log_every=1)
    whole = train(tiny_params(dataset, tmp_path / "whole", **kw))
    train(tiny_params(dataset, tmp_path / "split", stop_at_step=3, **kw))
    resumed = train(tiny_params(dataset, tmp_path / "split", resume="latest", **kw))
    assert [h["step"] for h in resumed.history] == [4, 5]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history[3:]]
    wa, wb = read_checkpoint(whole.last_checkpoint)["model"], read_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_fills_the_view_prior_bank_from_its_training_mice(dataset, tmp_path):
    from facelift_lib.mvdiffusion.view_prior import alpha_to_bank

    prior = {**TINY, "view_prior_mice": 2, "view_prior_size": 8, "view_prior_k": 1}
    result = train(tiny_params(dataset, tmp_path / "run", pixel_model=prior, max_steps=2, val_every=2))
    model = model_from_checkpoint(read_checkpoint(result.last_checkpoint))
    views = MultiViewDataset(dataset / "train.txt", 6, SIZE)
    alpha = (model.encode_views(torch.stack([views.views(0), views.views(1)]))[:, :, 3] + 1) / 2
    assert torch.equal(model.view_prior_bank, alpha_to_bank(alpha, 8)) and model.view_prior_bank.any()
    with pytest.raises(ValueError, match=r"train.txt: 2 training mice, but pixel_model.view_prior_mice is 3"):
        train(tiny_params(dataset, tmp_path / "run3", pixel_model={**prior, "view_prior_mice": 3}))
