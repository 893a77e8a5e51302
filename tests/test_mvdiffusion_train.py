"""Training: losses, identity-mapping score, checkpoints/resume/errors, both model kinds (tiny sizes)."""
from __future__ import annotations

import math

import pytest
import torch

from facelift_lib.cameras import standard_cameras
from facelift_lib.io import save_sample, write_list_file
from facelift_lib.mvdiffusion import load_checkpoint_pipeline
from facelift_lib.mvdiffusion.pipeline import read_checkpoint, write_tiny_facelift_pipeline
from facelift_lib.mvdiffusion.train import (TrainParams, identity_mapping_score, min_snr_weights, params_from_yaml,
                                            profile_train_params,
                                            read_log, train)

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
    assert ckpts == ["ckpt_00000002.pt", "ckpt_00000004.pt"]  # nothing half-written (.tmp) left behind
    assert (run / "samples" / "step_00000004.png").is_file()
    ck = read_checkpoint(result.last_checkpoint)
    assert ck["step"] == 4 and ck["kind"] == "pixel" and ck["camera_type"] == "mouse_standard_6view"
    assert ck["params"]["reference_view_idx"] == 0 and not ck["params"]["random_reference"]

    resumed = train(tiny_params(dataset, run, max_steps=6, resume="latest"))
    assert [h["step"] for h in resumed.history] == [5, 6]
    steps, vals = read_log(run)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6] and [v["step"] for v in vals] == [4, 6]
    assert read_checkpoint(resumed.last_checkpoint)["step"] == 6

    pipe = load_checkpoint_pipeline(resumed.last_checkpoint)
    out = pipe(torch.rand(1, 4, SIZE, SIZE), num_inference_steps=2, progress=False)
    assert out.shape == (1, 6, 4, SIZE, SIZE)

    with pytest.raises(FileExistsError, match="resume='latest'"):  # a fresh start must not mix with old checkpoints
        train(tiny_params(dataset, run))
    fresh = train(tiny_params(dataset, run, max_steps=2, overwrite=True))
    assert [s["step"] for s in read_log(run)[0]] == [1, 2]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt_00000002.pt"]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_00000002.png"]
    assert len(fresh.validations) == 1


def test_training_is_deterministic(dataset, tmp_path):
    a = train(tiny_params(dataset, tmp_path / "a", max_steps=2, val_every=0))
    b = train(tiny_params(dataset, tmp_path / "b", max_steps=2, val_every=0))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_missing_paths_are_errors(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train(tiny_params(dataset, tmp_path / "r", resume=str(tmp_path / "nope.pt")))
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        train(tiny_params(dataset, tmp_path / "r", resume="latest"))
    with pytest.raises(FileNotFoundError, match="init.pt"):
        train(tiny_params(dataset, tmp_path / "r", init_from=str(tmp_path / "init.pt")))
    with pytest.raises(FileNotFoundError, match="no_pipeline"):
        train(tiny_params(dataset, tmp_path / "r", model="facelift", init_from=str(tmp_path / "no_pipeline")))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint_pipeline(tmp_path / "missing.pt")


def test_params_from_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("out_dir: outputs/x\nseed: 7\n03_mvdiffusion:\n  image_size: 48\n"
                                     "  render_size: 96\n  train_overrides: {max_steps: 12}\n")
    p = params_from_yaml(tmp_path / "p.yaml")
    assert (p.max_steps, p.seed, p.model, p.pixel_model) == (12, 7, "pixel", {"image_size": 48})
    assert p.run_dir == "outputs/x/mvdiffusion/run" and p.train_list == "outputs/x/mvdiffusion/data/train.txt"
    (tmp_path / "f.yaml").write_text("03_mvdiffusion:\n  facelift_pipeline: /models/facelift\n"
                                     "  train_overrides: {max_steps: 9}\n")
    f = params_from_yaml(tmp_path / "f.yaml")
    assert (f.model, f.init_from, f.lr, f.warmup_steps, f.max_steps) == ("facelift", "/models/facelift", 5e-6, 500, 9)
    with pytest.raises(KeyError, match="max_stepz"):
        profile_train_params("outputs/x", overrides={"max_stepz": 3})


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


def test_training_views_smaller_than_the_model_are_an_error(dataset, tmp_path):
    with pytest.raises(ValueError, match="render_size"):
        train(tiny_params(dataset, tmp_path / "big", pixel_model={**TINY, "image_size": 32}))
