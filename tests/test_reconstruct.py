"""The whole pipeline on one image: diffusion views -> GS-LRM gaussians (facelift_lib.reconstruct)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from facelift_lib.cameras import standard_cameras
from facelift_lib.gaussians import Gaussians
from facelift_lib.gslrm import GSLRM, GSLRMConfig
from facelift_lib.mvdiffusion import load_checkpoint_pipeline
from facelift_lib.reconstruct import (Reconstruction, center_distances, reconstruct, reconstruct_from_views,
                                      reconstruction_report, rendered_views, view_quality)

TINY = GSLRMConfig(image_size=32, patch_size=8, d=32, n_layers=1, n_heads=2)


@pytest.fixture(scope="module")
def models(tiny_mv_checkpoint):
    torch.manual_seed(0)
    return load_checkpoint_pipeline(tiny_mv_checkpoint[0]), GSLRM(TINY).eval()


def test_one_image_gives_six_views_at_the_standard_cameras_and_their_gaussians(models):
    pipe, model = models
    reference = torch.rand(4, 40, 40, generator=torch.Generator().manual_seed(1))
    rec = reconstruct(reference, pipe, model, num_inference_steps=2, seed=3)
    assert rec.views.shape == (6, 4, 32, 32) and rec.reference is reference
    # the generated 16² views are read at GS-LRM's 32²: the standard cameras scaled with them, exactly
    torch.testing.assert_close(rec.cams.K, standard_cameras(pipe.camera_type, 32).K)
    torch.testing.assert_close(rec.cams.w2c, standard_cameras(pipe.camera_type).w2c)
    assert len(rec.gaussians) == 6 * 32 * 32 + model.config.num_global_tokens  # one per pixel + the global ones
    assert torch.isfinite(rec.gaussians.means).all()
    again = reconstruct(reference, pipe, model, num_inference_steps=2, seed=3)
    other = reconstruct(reference, pipe, model, num_inference_steps=2, seed=4)
    assert torch.equal(again.views, rec.views) and not torch.equal(other.views, rec.views)


def test_stage_two_alone_matches_a_direct_model_call(models):
    _, model = models
    cams = standard_cameras("mouse_standard_6view", 32)
    views = torch.rand(6, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    rec = reconstruct_from_views(views, cams, model)
    with torch.no_grad():
        direct = model(views[None, :, :3], (cams.K.float()[None], cams.w2c.float()[None]))[0]
    torch.testing.assert_close(rec.gaussians.means, direct.means)
    with pytest.raises(ValueError, match=r"\[V,4,H,W\] with V = 6"):
        reconstruct_from_views(views[:5], cams, model)
    with pytest.raises(ValueError, match="one RGBA image"):
        reconstruct(views, *models)


def test_view_quality_scores_a_perfect_and_an_empty_prediction():
    target = torch.ones(3, 4, 16, 16)
    target[:, :3, 4:12, 4:12] = 0.2
    target[:, 3] = 0
    target[:, 3, 4:12, 4:12] = 1
    same = view_quality(target.clone(), target)
    assert list(same["view"]) == [0, 1, 2] and (same["mask_iou"] == 1.0).all()
    assert (same["psnr_masked"] > 60).all()
    empty = torch.ones_like(target)
    empty[:, 3] = 0
    worse = view_quality(empty, target)
    assert (worse["mask_iou"] == 0.0).all() and (worse["psnr_masked"] < same["psnr_masked"]).all()
    with pytest.raises(ValueError, match="differ"):
        view_quality(target[:2], target)


def _points(xyz: torch.Tensor, opacity: float = 1.0) -> Gaussians:
    n = len(xyz)
    return Gaussians(means=xyz, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), scales=torch.full((n, 3), 0.01),
                     opacities=torch.full((n,), opacity), colors=torch.full((n, 3), 0.5))


def test_center_distances_separate_floaters_from_missing_parts():
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)  # spacing 1
    shifted = center_distances(_points(grid + torch.tensor([0.1, 0, 0])), grid)
    assert shifted["accuracy"] == pytest.approx(0.1, abs=1e-5) and shifted["completeness"] == pytest.approx(0.1, abs=1e-5)
    assert shifted["n_pred"] == 64
    floater = center_distances(_points(torch.cat([grid, torch.tensor([[13.0, 0, 0]])])), grid)
    assert floater["accuracy"] == pytest.approx(10.0 / 65, abs=1e-5) and floater["completeness"] == pytest.approx(0.0)
    half = center_distances(_points(grid[grid[:, 0] < 2]), grid)  # the x >= 2 half is missing
    assert half["accuracy"] == pytest.approx(0.0) and half["completeness"] == pytest.approx(0.75, abs=1e-5)
    faint = center_distances(_points(grid, opacity=0.01), grid, min_opacity=0.05)
    assert faint["n_pred"] == 0 and faint["chamfer"] == float("inf")


def test_report_of_the_true_gaussians_at_their_own_cameras_is_perfect():
    cams = standard_cameras("mouse_standard_6view", 32)
    g = Gaussians(means=torch.randn(300, 3, generator=torch.Generator().manual_seed(0)) * 0.15,
                  quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(300, 1), scales=torch.full((300, 3), 0.04),
                  opacities=torch.full((300,), 0.9), colors=torch.rand(300, 3, generator=torch.Generator().manual_seed(1)))
    views = rendered_views(g, cams, torch.zeros(3))  # premultiplied on black -> straight RGBA
    straight = torch.cat([views[:, :3] / views[:, 3:].clamp(min=1e-4), views[:, 3:]], 1).clamp(0, 1)
    assert views[:, 3, 16, 16].min() > 0.5 and views[:, 3, 0, 0].max() < 1e-3  # centred at the origin
    rec = Reconstruction(reference=straight[0], views=straight, cams=cams, gaussians=g)
    table, summary = reconstruction_report(rec, straight, g.means, rig_units_per_unit=100.0)
    assert len(table) == 6 and summary["mask_iou"] > 0.99 and summary["psnr_masked"] > 35
    assert summary["chamfer_mm"] == pytest.approx(0.0, abs=1e-4) and summary["n_gaussians_used"] == 300
    moved = Reconstruction(reference=straight[0], views=straight, cams=cams,
                           gaussians=dataclasses.replace(g, means=g.means + torch.tensor([0.0, 0.0, 0.2])))
    _, off = reconstruction_report(moved, straight, g.means, rig_units_per_unit=100.0)
    assert off["mask_iou"] < summary["mask_iou"] - 0.1 and off["accuracy_mm"] > 5  # 0.2 units = 20 mm up


def test_spread_views_starts_at_view_0_and_spreads():
    from facelift_lib.reconstruct import spread_views

    assert [spread_views(6, k) for k in range(1, 7)] == [[0], [0, 3], [0, 2, 4], [0, 1, 3, 4], [0, 1, 2, 3, 4],
                                                          [0, 1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="1..6"):
        spread_views(6, 7)


def test_view_count_table_scores_all_views_with_one_protocol_per_k(tmp_path):
    from facelift_lib.reconstruct import view_count_table
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    mice = render_mice(tmp_path, "test", 2, MouseDataConfig(size=16, n_gaussians=500), progress=False)
    torch.manual_seed(0)
    model = GSLRM(GSLRMConfig(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2)).eval()
    table, per_sample, protocols = view_count_table(model, mice.dirs, ks=[1, 3, 6])
    assert list(table.index) == [1, 3, 6] and len(per_sample) == 6
    assert protocols[3].input_views == (0, 2, 4) and protocols[3].scored_views == tuple(range(6))
    assert protocols[1].samples == ("mouse_2000000", "mouse_2000001") and protocols[1].split == "test"
    assert table["input_views"].tolist() == ["0", "0,2,4", "0-5"]
    assert torch.isnan(torch.tensor(float(table.loc[6, "heldout_psnr_masked"])))
    assert not torch.isnan(torch.tensor(float(table.loc[1, "heldout_psnr_masked"])))


def test_view_count_table_scores_at_a_resolution_other_than_the_models(tmp_path):
    """A 16² model scored at the samples' 32²: its gaussians rendered at 32², the protocol says 32, and the
    gate refuses to set that number beside the same model scored at its own 16²."""
    from facelift_lib.protocol import ProtocolMismatch, assert_comparable
    from facelift_lib.reconstruct import view_count_table
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    mice = render_mice(tmp_path, "test", 1, MouseDataConfig(size=32, n_gaussians=500), progress=False)
    torch.manual_seed(0)
    model = GSLRM(GSLRMConfig(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2)).eval()
    own, _, own_protocols = view_count_table(model, mice.dirs, ks=[6])
    at32, _, protocols32 = view_count_table(model, mice.dirs, ks=[6], score_size=32)
    assert own_protocols[6].resolution == 16 and protocols32[6].resolution == 32
    assert float(own.loc[6, "psnr_masked"]) != float(at32.loc[6, "psnr_masked"])
    with pytest.raises(ProtocolMismatch, match="resolution"):
        assert_comparable(own_protocols[6], protocols32[6])


def test_view_count_table_names_a_camera_set_other_than_the_standard_one(tmp_path):
    """The same mice seen by the rig's cameras are another measurement: the gate refuses to compare them."""
    from facelift_lib.protocol import ProtocolMismatch, assert_comparable
    from facelift_lib.reconstruct import view_count_table
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    torch.manual_seed(0)
    model = GSLRM(GSLRMConfig(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2)).eval()
    protocols, dirs = {}, []
    for ctype in ("mouse_standard_6view", "mouse_rig_6view"):
        mice = render_mice(tmp_path / ctype, "test", 1, MouseDataConfig(size=16, n_gaussians=500, camera_type=ctype),
                           progress=False)
        protocols[ctype] = view_count_table(model, mice.dirs, ks=[6])[2][6]
        dirs += mice.dirs
    assert protocols["mouse_standard_6view"].extra == ()
    assert dict(protocols["mouse_rig_6view"].extra) == {"cameras": "mouse_rig_6view"}
    with pytest.raises(ProtocolMismatch, match="extra"):
        assert_comparable(protocols["mouse_standard_6view"], protocols["mouse_rig_6view"])
    with pytest.raises(ValueError, match="different camera sets"):  # one mouse of each camera set
        view_count_table(model, dirs, ks=[6])


def test_evaluate_pipeline_scores_both_reconstructions_and_the_generated_views(models, tmp_path):
    from facelift_lib.protocol import ProtocolMismatch, assert_comparable
    from facelift_lib.reconstruct import evaluate_pipeline
    from facelift_lib.standard_mice import MouseDataConfig, render_mice, sample_mouse_ground_truth

    pipe, model = models
    mice = render_mice(tmp_path, "test", 2, MouseDataConfig(size=16, n_gaussians=500), progress=False)
    ev = evaluate_pipeline(pipe, model, mice.dirs, sample_mouse_ground_truth, num_inference_steps=2,
                           guidance_scale=2.0, eta=0.0, min_opacity=0.0)
    assert list(ev.summary.index) == ["pipeline", "true views"]
    assert ev.summary["input_views"].tolist() == ["0", "0-5"]
    assert len(ev.per_sample) == 4 and len(ev.per_view) == 4 * 6 and list(ev.generated.index) == list(range(6))
    assert ev.protocols["pipeline"].samples == ("mouse_2000000", "mouse_2000001")
    assert ev.protocols["generated views"].mask_source.startswith("generated alpha")
    # the pipeline's summary row is the mean of its per-sample rows
    rows = ev.per_sample[ev.per_sample["reconstruction"] == "pipeline"]
    assert float(ev.summary.loc["pipeline", "psnr_masked"]) == pytest.approx(rows["psnr_masked"].mean())
    # the generated views are scored against the true views: a perfect generator scores IoU 1
    name, (true_views, _, recs) = next(iter(ev.examples.items()))
    from facelift_lib.images import on_white, resize_rgba
    perfect = view_quality(on_white(resize_rgba(true_views, recs["pipeline"].cams.width)),
                           on_white(resize_rgba(true_views, recs["pipeline"].cams.width)))
    assert (perfect["mask_iou"] == 1).all()
    # the copy-the-input baseline: view 0 is the input itself; the other views score what its silhouette shares
    assert ev.copy_input.loc[0, "mask_iou"] == 1 and list(ev.copy_input.index) == list(range(6))
    S = recs["pipeline"].cams.width
    a = torch.stack([resize_rgba(ev.examples[n][0], S)[:, 3] > 0.5 for n in ev.examples])  # [B,V,S,S]
    want = ((a[:, :1] & a).sum((2, 3)) / (a[:, :1] | a).sum((2, 3))).mean(0)
    assert ev.copy_input["mask_iou"].to_numpy() == pytest.approx(want.numpy(), abs=1e-5)
    assert ev.copy_input["mask_iou"].iloc[1:].max() < 1
    assert ev.protocols["copy input"].mask_source.startswith("the input view's alpha")
    assert ev.retrieval_prior is None and "retrieval prior" not in ev.protocols  # this model has no prior
    assert torch.isfinite(torch.tensor(ev.per_sample["chamfer_mm"].to_numpy(dtype=float))).all()
    with pytest.raises(ProtocolMismatch, match="mask_source"):  # the gate: generated vs render numbers differ
        assert_comparable(ev.protocols["generated views"], ev.protocols["pipeline"], allow=["extra"])
    # how the views were sampled is part of every number that stands on them: another guidance is another protocol
    sampler = "DDIM 2 steps, guidance 2, eta 0, seed 0"
    assert dict(ev.protocols["generated views"].extra) == {"sampler": sampler}
    assert dict(ev.protocols["pipeline"].extra) == {"min_opacity": 0.0, "sampler": sampler}
    assert "sampler" not in dict(ev.protocols["true views"].extra)
    unguided = ev.protocols["generated views"].replace(extra={"sampler": sampler.replace("guidance 2", "guidance 1")})
    with pytest.raises(ProtocolMismatch, match="extra"):
        assert_comparable(ev.protocols["generated views"], unguided)


def test_evaluate_pipeline_refuses_samples_at_other_cameras(models, tmp_path):
    from facelift_lib.io import save_sample
    from facelift_lib.reconstruct import evaluate_pipeline

    pipe, model = models
    cams = standard_cameras("facelift_standard", 16)
    d = save_sample(tmp_path / "s", torch.rand(6, 4, 16, 16), cams)
    with pytest.raises(ValueError, match="cameras 'facelift_standard'.*mouse_standard_6view"):
        evaluate_pipeline(pipe, model, [d], lambda _: None, num_inference_steps=1)


def test_targets_table_marks_misses_and_refuses_a_missing_measurement():
    from facelift_lib.reconstruct import DEMO_TARGETS, targets_table

    measured = {k: v + 0.01 for k, v in DEMO_TARGETS.items()}
    measured["pipeline_mask_iou"] = 0.5
    table = targets_table(measured)
    assert table["met"].tolist() == [k != "pipeline_mask_iou" for k in DEMO_TARGETS]
    del measured["views6_mask_iou"]
    with pytest.raises(KeyError, match="views6_mask_iou"):
        targets_table(measured)


def test_evaluate_pipeline_scores_the_retrieval_prior_of_a_model_that_has_one(models, tmp_path):
    """The prior baseline is the model's own retrieval, scored like the generated views: a bank holding each test
    mouse again (its input view one pixel off, so not itself) draws views 1-5 exactly; a bank of other mice not."""
    from facelift_lib.io import load_sample
    from facelift_lib.mvdiffusion import PixelModelConfig, PixelMVDiffusion
    from facelift_lib.mvdiffusion.pipeline import MVDiffusionPipeline
    from facelift_lib.reconstruct import evaluate_pipeline
    from facelift_lib.standard_mice import MouseDataConfig, render_mice, sample_mouse_ground_truth

    pipe, model = models
    cfg = MouseDataConfig(size=16, n_gaussians=500)
    test = [load_sample(d, background=None)[0] for d in render_mice(tmp_path, "test", 2, cfg, progress=False).dirs]
    others = [load_sample(d, background=None)[0] for d in render_mice(tmp_path, "train", 2, cfg, progress=False).dirs]
    twins = torch.stack(test).clone()
    twins[:, 0, 3, 0, 0] = 1  # the input view one pixel off: an entry that is not the query itself
    results = {}
    for name, bank in (("twins", torch.cat([twins, torch.stack(others)])), ("others", torch.stack(others * 2))):
        torch.manual_seed(0)
        prior_model = PixelMVDiffusion(PixelModelConfig(image_size=16, block_out_channels=(8, 16), view_prior_mice=4,
                                                        view_prior_size=16, view_prior_k=1)).eval()
        prior_model.set_view_prior_bank(bank)
        prior_pipe = MVDiffusionPipeline(model=prior_model, scheduler=pipe.scheduler, camera_type=pipe.camera_type)
        ev = evaluate_pipeline(prior_pipe, model, render_mice(tmp_path, "test", 2, cfg, progress=False).dirs,
                               sample_mouse_ground_truth, num_inference_steps=1)
        assert list(ev.retrieval_prior.index) == list(range(6))
        assert ev.protocols["retrieval prior"].mask_source.startswith("the retrieval prior's alpha")
        assert dict(ev.protocols["retrieval prior"].extra) == {"k": 1, "bank_mice": 4}
        results[name] = ev.retrieval_prior["mask_iou"].iloc[1:]
    assert (results["twins"] > 0.95).all()
    assert results["others"].mean() < 0.9
