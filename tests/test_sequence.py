"""4D sequences: behaviour readouts (facelift_lib.behaviour) and the streaming frame loop (facelift_lib.sequence)."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from facelift_lib import sequence
from facelift_lib.behaviour import (angle_diff_deg, cloud_step, frame_readouts, heading_continuity, heading_from_motion,
                                    jitter, readout_errors, smooth_readouts)
from facelift_lib.gslrm import GSLRM, GSLRMConfig
from facelift_lib.preprocess import preprocess_frame, variant_config
from facelift_lib.rig import load_ground_truth, load_rig, read_rig_frame
from facelift_lib.synthetic_rig import make_rig_dataset
from facelift_lib.sequence import SequenceConfig, finish_sequence, run_sequence

TINY = GSLRMConfig(image_size=32, patch_size=4, d=32, n_layers=1, n_heads=2)
N_FRAMES = 6


# --- behaviour readouts ----------------------------------------------------------------------------------
def mouse_like_cloud(heading_deg: float, center=(10.0, -5.0, 15.0), n: int = 4000, seed: int = 0) -> torch.Tensor:
    """[N,3] mm: an elongated body (80 mm along its axis, Gaussian) plus a thin tail behind it, turned to heading."""
    gen = torch.Generator().manual_seed(seed)
    body = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([20.0, 8.0, 6.0], dtype=torch.float64)
    u = torch.rand(n // 4, generator=gen, dtype=torch.float64)
    tail = torch.stack([-40.0 - 60.0 * u, torch.zeros_like(u), torch.zeros_like(u)], -1)  # behind the body (-x)
    pts = torch.cat([body, tail])
    a = math.radians(heading_deg)
    R = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    return pts @ R.T + torch.tensor(center, dtype=torch.float64)


@pytest.mark.parametrize("heading", [0.0, 37.0, 135.0, -100.0])
def test_readouts_find_the_heading_away_from_the_tail_and_the_centroid(heading):
    pts = mouse_like_cloud(heading)
    r = frame_readouts(pts, torch.ones(len(pts)))
    assert abs(angle_diff_deg(r["heading_deg"], heading)) < 3.0
    np.testing.assert_allclose([r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"]],
                               pts.mean(0).numpy(), atol=1e-9)
    assert 120.0 < r["length_mm"] < 200.0  # body (~+-40 mm) plus the tail behind it
    assert r["height_mm"] == pytest.approx(float(pts[:, 2].quantile(0.98)), abs=1.0)


def test_readouts_leave_out_faint_gaussians_and_weigh_by_opacity():
    pts = mouse_like_cloud(0.0)
    far = torch.tensor([[500.0, 500.0, 500.0]], dtype=torch.float64)
    faint = frame_readouts(torch.cat([pts, far]), torch.cat([torch.ones(len(pts)), torch.tensor([0.01])]))
    clean = frame_readouts(pts, torch.ones(len(pts)))
    assert faint["centroid_x_mm"] == pytest.approx(clean["centroid_x_mm"]) and faint["n_used"] == len(pts)
    empty = frame_readouts(pts, torch.zeros(len(pts)))
    assert empty["n_used"] == 0 and math.isnan(empty["heading_deg"])


def test_heading_continuity_flips_back_a_half_turn_but_keeps_real_turns():
    h = np.array([10.0, 20.0, 210.0 - 360.0, 40.0, np.nan, 50.0 + 180.0, 60.0])
    fixed = heading_continuity(h)
    np.testing.assert_allclose(fixed[[0, 1, 2, 3, 5, 6]], [10.0, 20.0, 30.0, 40.0, 50.0, 60.0], atol=1e-9)
    assert np.isnan(fixed[4])


def test_heading_sign_from_the_direction_of_travel():
    """A mouse walking along a turning path whose per-frame axis sign is scrambled: the motion sign recovers the
    true heading everywhere, continuity alone gets the whole sequence backwards when frame 0 is."""
    t = np.arange(40, dtype=np.float64)
    true = 30.0 + 3.0 * t  # degrees, turning left while walking 4 mm per frame along it
    xy = np.cumsum(4.0 * np.stack([np.cos(np.radians(true)), np.sin(np.radians(true))], 1), 0)
    flips = np.random.default_rng(0).integers(0, 2, len(t)) * 180.0
    flips[0] = 180.0
    df = pd.DataFrame({"centroid_x_mm": xy[:, 0], "centroid_y_mm": xy[:, 1], "centroid_z_mm": 15.0,
                       "heading_deg": angle_diff_deg(true + flips, 0.0)})
    np.testing.assert_allclose(angle_diff_deg(heading_from_motion(df), true), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(angle_diff_deg(heading_continuity(df["heading_deg"]), true)), 180.0, atol=1e-9)
    standing = df.assign(centroid_x_mm=0.0, centroid_y_mm=0.0)  # no motion: the continuity sign stays
    np.testing.assert_allclose(heading_from_motion(standing), heading_continuity(df["heading_deg"]))


def readout_frame(n: int = 30, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"centroid_x_mm": 3.0 * t, "centroid_y_mm": 10 * np.sin(t / 5), "centroid_z_mm": 15 + 0 * t,
                       "heading_deg": angle_diff_deg(170.0 + 4.0 * t, 0.0), "length_mm": 90 + 0 * t,
                       "height_mm": 30 + 5 * np.sin(t / 4)})
    return df + noise * rng.standard_normal(df.shape) if noise else df


def test_errors_and_jitter_against_the_truth():
    truth = readout_frame()
    shifted = truth.copy()
    shifted["centroid_x_mm"] += 2.0  # a constant offset: an error, but no jitter
    shifted["heading_deg"] = angle_diff_deg(shifted["heading_deg"] + 5.0, 0.0)
    err = readout_errors(shifted, truth)
    np.testing.assert_allclose(err["centroid_err_mm"], 2.0)
    np.testing.assert_allclose(err["heading_err_deg"], 5.0, atol=1e-9)  # across the +-180 wrap too
    j = jitter(shifted, truth)
    assert j["centroid_jitter_mm"] == pytest.approx(0.0, abs=1e-9) and j["heading_jitter_deg"] < 1e-9
    noisy = readout_frame(noise=1.0)
    assert jitter(noisy, truth)["centroid_jitter_mm"] > 1.0
    assert set(jitter(noisy)) == {"centroid_jitter_mm_acc", "heading_jitter_deg_acc", "length_jitter_mm_acc",
                                  "height_jitter_mm_acc"}


def test_smoothing_reduces_jitter_of_noisy_readouts():
    truth, noisy = readout_frame(), readout_frame(noise=1.5, seed=3)
    smoothed = smooth_readouts(noisy, window=7, polyorder=2)
    assert jitter(smoothed, truth)["centroid_jitter_mm"] < 0.6 * jitter(noisy, truth)["centroid_jitter_mm"]
    assert readout_errors(smoothed, truth)["heading_err_deg"].max() < 90  # unwrapped before filtering
    with pytest.raises(ValueError, match="polyorder"):
        smooth_readouts(noisy.iloc[:3], window=7, polyorder=3)


def test_cloud_step_is_the_motion_of_the_cloud():
    a = mouse_like_cloud(0.0, n=500)
    assert cloud_step(a, a) == 0.0
    assert cloud_step(a, a + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)) == pytest.approx(0.5, rel=0.2)


# --- the frame loop ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_rig(tmp_path_factory) -> Path:
    return make_rig_dataset(tmp_path_factory.mktemp("seq") / "rig", n_frames=N_FRAMES, seed=1, image_scale=0.125,
                            n_gaussians=1500)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GSLRM(TINY)
    path = tmp_path_factory.mktemp("gslrm") / "ckpt_0000000000000000.pt"
    torch.save({"model": model.state_dict(), "model_config": TINY.to_dict()}, path)
    return path


def seq_config(rig: Path, ckpt: Path, out: Path, **kw) -> SequenceConfig:
    return SequenceConfig(rig_dir=str(rig), out_dir=str(out), checkpoint=str(ckpt), preprocess_size=64, panel_size=32,
                          turn_frames=N_FRAMES, **kw)


def output_files(out: Path) -> dict[str, bytes]:
    """Every per-frame file and table of a sequence folder, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("frames", "ply", "panels")
            for p in sorted((out / sub).iterdir())}


@pytest.fixture(scope="module")
def clean_run(tiny_rig, tiny_checkpoint, tmp_path_factory):
    cfg = seq_config(tiny_rig, tiny_checkpoint, tmp_path_factory.mktemp("clean") / "sequence")
    stats = run_sequence(cfg, progress=False)
    return cfg, stats, finish_sequence(cfg, smooth_window=5)


def test_sequence_writes_every_frame_and_scores_a_rotating_held_out_camera(clean_run):
    cfg, stats, res = clean_run
    out = Path(cfg.out_dir)
    assert stats.processed == N_FRAMES and stats.fps > 0
    records = [json.loads(p.read_text()) for p in sorted((out / "frames").glob("*.json"))]
    assert [r["held_out_view"] for r in records] == [f % 6 for f in range(N_FRAMES)]
    for r in records:
        assert r["held_out_camera"] not in r["input_cameras"] and len(r["input_cameras"]) == 5
        assert 0.0 <= r["heldout_mask_iou"] <= 1.0 and math.isfinite(r["heldout_psnr_masked"])
    manifest = json.loads(res.files["manifest"].read_text())
    assert [f["frame"] for f in manifest["frames"]] == list(range(N_FRAMES))
    assert [f["timestamp_s"] for f in manifest["frames"]] == pytest.approx([t / cfg.fps for t in range(N_FRAMES)])
    assert all((out / f["ply"]).is_file() for f in manifest["frames"])
    csv = pd.read_csv(res.files["csv"], index_col="frame")
    assert list(csv.index) == list(range(N_FRAMES)) and "true_centroid_x_mm" in csv and "heldout_mask_iou" in csv
    assert res.files["video"].suffix == ".mp4" and res.files["video"].stat().st_size > 0
    for name in ("heldout_psnr_masked", "heldout_mask_iou", "centroid_err_mm", "heading_err_deg", "centroid_jitter_mm"):
        assert math.isfinite(res.summary[name]) and res.protocols[name].n == N_FRAMES
    assert not list(out.rglob("*tmp*"))


def test_frame_gaussians_come_back_in_rig_millimetres(tiny_rig):
    """A sample's normalisation taken back by to_rig_mm puts the true gaussians where they were in the rig."""
    rig = load_rig(tiny_rig)
    _, cams = preprocess_frame(read_rig_frame(rig, 2), variant_config("standard_camera", size=32, workers=1))
    norm = cams.meta["normalization"]
    gt = load_ground_truth(tiny_rig, 2)
    in_facelift = gt.transformed(norm["scale"], torch.tensor(norm["translation"], dtype=torch.float32))
    assert in_facelift.means.abs().max() < 3.0  # really moved: FaceLift units, mouse near the origin
    back = sequence.to_rig_mm(in_facelift, norm)
    torch.testing.assert_close(back.means, gt.means, atol=1e-3, rtol=0)
    torch.testing.assert_close(back.scales, gt.scales, atol=1e-5, rtol=1e-4)


def test_interrupted_run_resumes_with_identical_outputs(clean_run, tiny_rig, tiny_checkpoint, tmp_path, monkeypatch):
    """A failure inside frame 3 (after its PLY, before its panel and JSON) stops the run; the rerun skips frames
    0-2, redoes 3 (its PLY without JSON does not count) and ends with the clean run's files, byte for byte."""
    cfg = seq_config(tiny_rig, tiny_checkpoint, tmp_path / "sequence")
    real_write = sequence.write_image

    def crash_at_frame_3(path, img):
        if Path(path).stem == "frame_000003":
            raise KeyboardInterrupt("killed")
        return real_write(path, img)

    monkeypatch.setattr(sequence, "write_image", crash_at_frame_3)
    with pytest.raises(KeyboardInterrupt):
        run_sequence(cfg, progress=False)
    monkeypatch.undo()
    out = Path(cfg.out_dir)
    assert sequence.done_frames(cfg) == {0, 1, 2} and (out / "ply" / "frame_000003.ply").is_file()
    stats = run_sequence(cfg, progress=False)
    assert stats.processed == N_FRAMES - 3
    assert output_files(out) == output_files(Path(clean_run[0].out_dir))


def test_resume_with_another_configuration_is_refused(clean_run, tiny_rig, tiny_checkpoint):
    cfg = seq_config(tiny_rig, tiny_checkpoint, Path(clean_run[0].out_dir), fps=25.0)
    with pytest.raises(ValueError, match="another configuration.*fps"):
        run_sequence(cfg, progress=False)


def test_real_rig_without_ground_truth_runs_everything_else(clean_run, tiny_rig, tiny_checkpoint, tmp_path):
    real = tmp_path / "real_rig"
    shutil.copytree(tiny_rig, real)
    shutil.rmtree(real / "gt")
    meta = json.loads((real / "rig.json").read_text())
    del meta["generator"]  # a rig.json as a lab writes it
    (real / "rig.json").write_text(json.dumps(meta))
    cfg = seq_config(real, tiny_checkpoint, tmp_path / "sequence", frames=(0, 1, 2, 3))
    run_sequence(cfg, progress=False)
    res = finish_sequence(cfg, smooth_window=3, smooth_polyorder=1)
    assert res.truth is None and res.trunk is None
    assert "centroid_err_mm" not in res.summary and "centroid_jitter_mm" not in res.summary
    assert math.isfinite(res.summary["heldout_mask_iou"]) and math.isfinite(res.summary["centroid_jitter_mm_acc"])
    csv = pd.read_csv(res.files["csv"], index_col="frame")
    assert not any(c.startswith("true_") for c in csv.columns) and len(csv) == 4
    # the same frames' gaussians as on the synthetic rig: only the comparisons are gone
    clean = pd.read_csv(clean_run[2].files["csv"], index_col="frame").loc[[0, 1, 2, 3], list(csv.columns)]
    pd.testing.assert_frame_equal(csv.drop(columns="cloud_step_mm"), clean.drop(columns="cloud_step_mm"))


def test_shards_are_contiguous_and_cover_the_frames():
    parts = sequence.shard(list(range(7)), 2)
    assert sum(parts, []) == list(range(7)) and sorted(map(len, parts)) == [3, 4]
    assert sequence.shard([4, 5], 3) == [[4], [5]]
    assert sum(sequence.shard(list(range(48)), 5), []) == list(range(48))


@pytest.mark.slow
def test_two_workers_write_what_one_worker_writes(clean_run, tiny_rig, tiny_checkpoint, tmp_path):
    cfg = seq_config(tiny_rig, tiny_checkpoint, tmp_path / "sequence")
    stats = run_sequence(cfg, workers=2, progress=False)
    assert stats.processed == N_FRAMES
    assert output_files(Path(cfg.out_dir)) == output_files(Path(clean_run[0].out_dir))
    res = finish_sequence(cfg, smooth_window=5)
    assert res.files["csv"].read_bytes() == clean_run[2].files["csv"].read_bytes()
    assert res.files["manifest"].read_bytes() == clean_run[2].files["manifest"].read_bytes()


@pytest.mark.slow
def test_a_killed_process_resumes_with_identical_outputs(clean_run, tiny_rig, tiny_checkpoint, tmp_path):
    """SIGKILL a separate process in the middle of the sequence, then resume here: same files as the clean run."""
    cfg = seq_config(tiny_rig, tiny_checkpoint, tmp_path / "sequence")
    code = ("import json, sys; from facelift_lib.sequence import config_from_dict, run_sequence; "
            "run_sequence(config_from_dict(json.loads(sys.argv[1])), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg.to_dict())], env={**os.environ,
                            "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not sequence.done_frames(cfg) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sequence.done_frames(cfg)
    assert 0 < len(done) < N_FRAMES, f"the kill should land mid-sequence; frames done: {sorted(done)}"
    run_sequence(cfg, progress=False)
    assert output_files(Path(cfg.out_dir)) == output_files(Path(clean_run[0].out_dir))


def test_trajectory_and_readout_plots_draw_every_series():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facelift_lib import viz

    truth = readout_frame().assign(timestamp_s=np.arange(30) / 10)
    ax = viz.plot_trajectory({"predicted": readout_frame(noise=1.0), "true": truth})
    assert len(ax.get_lines()) == 4 and len(ax.collections) == 2  # path + start dot each; one quiver each
    fig = viz.plot_readouts({"predicted": truth, "true": truth}, ["heading_deg", "height_mm"])
    assert [len(a.get_lines()) for a in fig.axes] == [2, 2]
    plt.close("all")


def test_circular_spread_of_headings():
    from facelift_lib.behaviour import circular_std_deg

    assert circular_std_deg([170.0, -170.0, 180.0]) < 10.0  # across the wrap: one direction
    assert circular_std_deg(np.full(5, 42.0)) == pytest.approx(0.0, abs=1e-4)
    assert circular_std_deg(np.linspace(-180, 180, 36, endpoint=False)) > 300.0  # every direction


class OracleModel:
    """Stands in for GS-LRM: returns the frame's true gaussians in the sample's FaceLift units, whatever it reads."""

    def __init__(self, g, size: int):
        self.g, self.config = g, GSLRMConfig(image_size=size, patch_size=4, d=32, n_layers=1, n_heads=2)

    def __call__(self, images, cams):
        return type(self.g)(**{k: v[None] for k, v in vars(self.g).items()})

    def eval(self):
        return self


def test_true_gaussians_score_the_held_out_camera_and_the_readouts_of_the_truth(tiny_rig, tmp_path):
    """The measuring chain without a model: the true gaussians of a frame, moved into its sample's FaceLift units,
    go through process_frame in GS-LRM's place. The held-out render must match the preprocessed mask and the
    readouts (back in rig mm) those of the true gaussians: cameras, normalisation and to_rig_mm agree."""
    rig, frame, size = load_rig(tiny_rig), 2, 64
    cfg = SequenceConfig(rig_dir=str(tiny_rig), out_dir=str(tmp_path / "sequence"), checkpoint="unused",
                         preprocess_size=size, panel_size=32, device="cpu")
    for sub in ("frames", "ply", "panels"):
        (tmp_path / "sequence" / sub).mkdir(parents=True)
    _, cams = preprocess_frame(read_rig_frame(rig, frame), variant_config("standard_camera", size=size, workers=1))
    norm = cams.meta["normalization"]
    gt = load_ground_truth(tiny_rig, frame)
    oracle = OracleModel(gt.transformed(norm["scale"], torch.tensor(norm["translation"], dtype=torch.float32)), size)
    ctx = sequence.FrameContext(cfg=cfg, rig=rig, model=oracle, has_gt=True,
                                background=torch.ones(3), device=torch.device("cpu"))
    r = sequence.process_frame(ctx, frame)
    # a wrong camera or normalisation puts the silhouette elsewhere (IoU ~0); at 64² the renderer's 0.3 px² blur
    # thickens the mouse's thin parts, so even the truth stays well below 1 (the ceiling 07 reports)
    assert r["heldout_mask_iou"] > 0.6
    assert r["true_heldout_mask_iou"] == r["heldout_mask_iou"]  # the model's place, taken by the truth itself
    for k in ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "height_mm"):
        assert r["readouts"][k] == pytest.approx(r["truth"][k], abs=0.5), k
    assert abs(angle_diff_deg(r["readouts"]["heading_deg"], r["truth"]["heading_deg"])) < 2.0


def test_mask_centre_baseline_is_reported_with_the_truth(clean_run):
    _, _, res = clean_run
    assert 0.0 <= res.summary["baseline_centroid_err_mm"] < 10.0  # the rays through the mask centroids meet near it
    assert "no GS-LRM" in dict(res.protocols["baseline_centroid_err_mm"].extra)["centre"]


def test_a_frame_with_an_empty_mask_stops_the_run_or_is_skipped(tiny_rig, tiny_checkpoint, tmp_path):
    """on_error='raise' names the frame; 'skip' records it with its error, leaves it out of the tables and the
    video, lists it in the manifest, and drops the steps across the gap from the jitter."""
    from facelift_lib.io import write_mask
    from facelift_lib.rig import RigError, frame_file

    bad = tmp_path / "rig"
    shutil.copytree(tiny_rig, bad)
    rig = load_rig(bad)
    write_mask(frame_file(bad, "masks", rig.names[4], 2), np.zeros((rig.height, rig.width), bool))
    with pytest.raises(RigError, match="sequence frame 2:.*on_error='skip'"):
        run_sequence(seq_config(bad, tiny_checkpoint, tmp_path / "raise"), progress=False)
    cfg = seq_config(bad, tiny_checkpoint, tmp_path / "skip", on_error="skip")
    run_sequence(cfg, progress=False)
    res = finish_sequence(cfg, smooth_window=3, smooth_polyorder=1)
    assert res.summary["frames_skipped"] == 1 and list(res.readouts.index) == [0, 1, 3, 4, 5]
    manifest = json.loads(res.files["manifest"].read_text())
    assert [s["frame"] for s in manifest["skipped"]] == [2] and "cam_4" in manifest["skipped"][0]["error"]
    assert 2 not in res.clouds.index and 3 not in res.clouds.index  # no cloud step across the gap
    moved = res.readouts.copy()
    moved.loc[[3, 4, 5], "centroid_x_mm"] += 1000.0  # a jump across the gap is not a frame-to-frame step
    assert jitter(moved, res.truth)["centroid_jitter_mm"] == pytest.approx(
        jitter(res.readouts, res.truth)["centroid_jitter_mm"])
