"""Standard-camera 6-view datasets: ground-truth renders for diffusion training, generated GS-LRM data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facelift_lib.cameras import orbit_cameras, standard_cameras
from facelift_lib.gaussians import Gaussians
from facelift_lib.io import load_sample, read_list_file, save_sample, validate_sample, write_list_file
from facelift_lib.render import render_gaussians
from facelift_lib.synthetic import build_standard_view_dataset, checklist, generate_dataset, standard_sample_ground_truth

SIZE = 16


def test_standard_cameras_at_a_small_size_pass_validation(tmp_path):
    """The contract synthetic data relies on: the standard spec scaled to the image size is the standard spec."""
    cams = standard_cameras("mouse_standard_6view", 32)
    images = torch.zeros(6, 4, 32, 32)
    images[:, 3, 10:20, 8:24] = 1.0
    save_sample(tmp_path / "s", images, cams)
    assert validate_sample(tmp_path / "s") == []
    wrong = cams.replace(K=standard_cameras("mouse_standard_6view").K)  # 512² intrinsics on 32² images
    save_sample(tmp_path / "w", images, wrong)
    assert validate_sample(tmp_path / "w")


def blob_gaussians(n: int = 400, seed: int = 0) -> Gaussians:
    """A lopsided ellipsoid of gaussians in rig millimetres around (100, -50, 20), coloured by x."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * torch.tensor([30.0, 12.0, 10.0])
    colors = torch.stack([(pts[:, 0] > 0).float(), 0.3 * torch.ones(n), (pts[:, 0] <= 0).float()], 1)
    return Gaussians(means=pts + torch.tensor([100.0, -50.0, 20.0]), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     scales=torch.full((n, 3), 4.0), opacities=torch.full((n,), 0.9), colors=colors)


@pytest.fixture()
def fake_rig(tmp_path, monkeypatch):
    """Preprocessed-style samples (rig cameras, normalisation, rig frame) and a fake ground truth."""
    import facelift_lib.rig as rig

    calls = []

    def load_ground_truth(rig_dir, frame):
        calls.append((str(rig_dir), frame))
        return blob_gaussians(seed=frame)

    monkeypatch.setattr(rig, "load_ground_truth", load_ground_truth, raising=False)
    lists = {}
    for split, frames in (("train", [0, 1]), ("val", [2])):
        dirs = []
        for f in frames:
            cams = orbit_cameras([10, 70, 130, 190, 250, 310], 35.0, distance=3.3, fx=20.0, width=SIZE)
            cams.meta = {"normalization": {"scale": 2.7 / 300.0, "translation": [-100.0, 50.0, -20.0]},
                         "preprocess": {"rig_frame": f}}
            img = torch.zeros(6, 4, SIZE, SIZE)
            img[:, 3, 4:12, 4:12] = 1
            dirs.append(save_sample(tmp_path / "pre" / f"frame_{f:06d}", img, cams))
        lists[split] = write_list_file(tmp_path / "pre" / f"{split}.txt", dirs)
    return tmp_path / "rig", lists, calls


def test_build_standard_view_dataset(fake_rig, tmp_path):
    rig_dir, lists, calls = fake_rig
    out = build_standard_view_dataset(rig_dir, lists, tmp_path / "std", size=SIZE, yaws_per_frame=2, progress=False)
    train_dirs, val_dirs = read_list_file(out["train"]), read_list_file(out["val"])
    assert len(train_dirs) == 4 and len(val_dirs) == 2  # 2 headings per frame
    assert sorted(f for _, f in calls) == [0, 1, 2]
    spec = standard_cameras("mouse_standard_6view", SIZE)
    for d in train_dirs + val_dirs:
        images, cams = load_sample(d, background=None)
        assert validate_sample(d, expected_views=6) == []
        torch.testing.assert_close(cams.K, spec.K)
        torch.testing.assert_close(cams.w2c, spec.w2c)
        assert cams.meta["camera_type"] == "mouse_standard_6view" and cams.meta["camera_distance"] == 2.7
        assert (images[:, 3] > 0.5).flatten(1).any(1).all()  # the mouse is in every view
    a, _ = load_sample(train_dirs[0], background=None)
    b, cams_b = load_sample(train_dirs[1], background=None)
    assert cams_b.meta["yaw_deg"] != 0.0 and not torch.allclose(a, b)  # the turned copy looks different
    # the object sits at the origin: its mask is centred in the top-down-ish views
    ys, xs = torch.nonzero(a[0, 3] > 0.5, as_tuple=True)
    assert abs(xs.float().mean() - SIZE / 2) < 3 and abs(ys.float().mean() - SIZE / 2) < 4
    # each sample's ground truth, in its own world, renders to its own pixels (the turned copy included)
    for d in train_dirs[:2]:
        images, cams = load_sample(d, background=None)
        gt, scale = standard_sample_ground_truth(rig_dir, d)
        assert scale == pytest.approx(2.7 / 300.0)
        _, alpha, _ = render_gaussians(gt, cams)
        torch.testing.assert_close(alpha[..., 0], images[:, 3], atol=2.5 / 255, rtol=0)
    with pytest.raises(ValueError, match="no .*rig_frame.*not a standard-view sample"):
        standard_sample_ground_truth(rig_dir, read_list_file(lists["train"])[0])


def test_generate_dataset_writes_standard_cameras_never_input_ones(tiny_mv_checkpoint, tmp_path):
    ckpt, std_list = tiny_mv_checkpoint
    rig_like = orbit_cameras([5, 65, 125, 185, 245, 305], 40.0, distance=4.0, fx=30.0, width=24)
    img = torch.rand(6, 4, 24, 24)
    img[:, 3] = 1
    img[:, 3, :2] = 0
    raw = write_list_file(tmp_path / "raw.txt", [save_sample(tmp_path / "raw" / "frame_000007", img, rig_like)])
    result = generate_dataset(ckpt, {"train": std_list, "val": raw}, tmp_path / "synthetic", num_inference_steps=2,
                              output_size=32, progress=False)
    spec = standard_cameras("mouse_standard_6view", 32)
    assert [d.name for d in read_list_file(result.lists["val"])] == ["frame_000007"]
    for d in result.samples["train"] + result.samples["val"]:
        images, cams = load_sample(d, background=None)
        assert images.shape == (6, 4, 32, 32)
        torch.testing.assert_close(cams.K, spec.K)
        torch.testing.assert_close(cams.w2c, spec.w2c)
        meta = json.loads((d / "opencv_cameras.json").read_text())
        assert meta["camera_type"] == "mouse_standard_6view" and meta["camera_distance"] == 2.7
        assert set(images[:, 3].unique().tolist()) <= {0.0, 1.0}  # alpha is the thresholded mask
    # ground truth exists only for the standard-camera inputs
    assert result.quality is not None and set(result.quality["split"]) == {"train"}
    assert len(result.quality) == 2 * 6 and result.quality["mask_iou"].between(0, 1).all()
    checks = result.checklist
    assert len(checks) == 3 and (checks["views"] == 6).all() and (checks["problems"] == 0).all()
    assert (checks["distance_err"] < 1e-6).all() and (checks["focal_rel_err"] < 1e-6).all()


def test_generate_dataset_from_a_loaded_pipeline_is_the_checkpoints_dataset(tiny_mv_checkpoint, tmp_path):
    """04 passes the pipeline `weights.load_mvdiffusion` loaded (shipped, run or path): the same samples as from
    the checkpoint file, and each sample names the file it was generated by."""
    from facelift_lib.mvdiffusion.pipeline import load_checkpoint_pipeline

    ckpt, std_list = tiny_mv_checkpoint
    kw = dict(num_inference_steps=2, max_samples=1, progress=False)
    by_file = generate_dataset(ckpt, {"train": std_list}, tmp_path / "a", **kw)
    by_pipe = generate_dataset(load_checkpoint_pipeline(ckpt), {"train": std_list}, tmp_path / "b", **kw)
    (a,), (b,) = by_file.samples["train"], by_pipe.samples["train"]
    torch.testing.assert_close(load_sample(a)[0], load_sample(b)[0], atol=0, rtol=0)
    for d in (a, b):
        assert json.loads((d / "opencv_cameras.json").read_text())["generated_by"] == str(Path(ckpt).resolve())


def test_generate_dataset_stops_on_a_missing_checkpoint(tmp_path):
    (tmp_path / "l.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="ckpt_missing.pt"):
        generate_dataset(tmp_path / "ckpt_missing.pt", {"train": tmp_path / "l.txt"}, tmp_path / "o")


def test_generate_dataset_stops_at_the_first_invalid_sample_and_names_it(tiny_mv_checkpoint, tmp_path, monkeypatch):
    """The real validation runs on every sample; one that it (here, made to) reject stops the run."""
    import facelift_lib.synthetic as synthetic

    ckpt, _ = tiny_mv_checkpoint
    cams = orbit_cameras([5, 65, 125, 185, 245, 305], 40.0, distance=4.0, fx=30.0, width=SIZE)
    img = torch.rand(6, 4, SIZE, SIZE)
    img[:, 3] = 1
    raw = write_list_file(tmp_path / "raw.txt", [save_sample(tmp_path / "raw" / f"frame_{i:06d}", img, cams)
                                                 for i in range(3)])
    validated = []

    def validate_but_reject_frame_1(sample_dir, **kw):
        validated.append(sample_dir.name)
        problems = validate_sample(sample_dir, **kw)
        return problems + ["images/cam_003.png: injected problem"] if sample_dir.name == "frame_000001" else problems

    monkeypatch.setattr(synthetic, "validate_sample", validate_but_reject_frame_1)
    out = tmp_path / "synthetic"
    with pytest.raises(ValueError, match=r"sample frame_000001 .*fails validate_sample:\n  - images/cam_003.png"):
        generate_dataset(ckpt, {"train": raw}, out, num_inference_steps=1, batch_size=1, progress=False)
    assert validated == ["frame_000000", "frame_000001"]  # checked one by one, as written
    assert not (out / "train" / "frame_000002").exists()  # nothing after the bad sample
    assert not (out / "train.txt").exists()  # no list a later notebook could train on


def test_checklist_flags_a_sample_at_rig_cameras(tmp_path):
    cams = orbit_cameras([0, 60, 120, 180, 240, 300], 20.0, distance=3.1, fx=30.0, width=SIZE)
    cams.meta = {"camera_type": "mouse_standard_6view", "camera_distance": 2.7}
    img = torch.zeros(6, 4, SIZE, SIZE)
    img[:, 3, 4:12, 4:12] = 1
    d = save_sample(tmp_path / "bad", img, cams)
    row = checklist([d]).iloc[0]
    assert row["problems"] > 0 and row["distance_err"] == pytest.approx(0.4, abs=1e-6)
