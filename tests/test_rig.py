"""The virtual markerless rig (facelift_lib.synthetic_rig), the rig folder it writes and how facelift_lib.rig reads
rig folders back (calibration formats, the one frame reader, ground truth)."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facelift_lib.calibration import project_points_opencv, save_anipose_toml, save_dannce_mat, save_mammal_pkl
from facelift_lib.io import read_image, write_image
from facelift_lib.mouse import (MOUSE_PARTS, MousePose, body_center, mouse_gaussians, mouse_gaussians_with_parts,
                                mouse_trajectory)
from facelift_lib.render import render_gaussians
from facelift_lib.rig import (RigError, has_ground_truth, load_centers, load_ground_truth, load_rig, read_rig_frame,
                              rig_to_facelift)
from facelift_lib.synthetic_rig import (RIG_LENSES, ensure_rig, make_rig_dataset, markerless_mouse_rig, raw_view_maps,
                                        render_raw_views, rig_folder, workbook_rig)

SPEC_AZ = (-144.0, 31.0, 94.0, -22.0, 157.0, -77.0)
SPEC_EL = (1.0, 15.0, 2.0, 1.0, 15.0, 18.0)
SMOKE = dict(n_frames=8, seed=0, image_scale=0.25, n_gaussians=4000, fur="brown")


@pytest.fixture(scope="module")
def smoke_rig(tmp_path_factory) -> Path:
    """The default smoke rig (8 frames, 288x256, 4000 gaussians), built once for this module."""
    return make_rig_dataset(tmp_path_factory.mktemp("rig") / "smoke", **SMOKE)


# --- the virtual rig ----------------------------------------------------------------------------------
def test_rig_geometry_matches_markerless_mouse_1():
    cams = markerless_mouse_rig()
    assert (cams.width, cams.height) == (1152, 1024) and cams.names == [f"cam_{i}" for i in range(6)]
    c = cams.centers
    dist = c.norm(dim=-1)
    assert bool(((dist > 300) & (dist < 335)).all())
    assert bool(((cams.fx > 1637) & (cams.fx < 1675)).all())
    torch.testing.assert_close(cams.fy / cams.fx, torch.full((6,), 1.005, dtype=torch.float64), atol=1e-3, rtol=0)
    el = torch.rad2deg(torch.asin(c[:, 2] / dist))
    az = torch.rad2deg(torch.atan2(c[:, 1], c[:, 0]))
    assert float((el - torch.tensor(SPEC_EL, dtype=torch.float64)).abs().max()) < 2.0
    daz = torch.remainder(az - torch.tensor(SPEC_AZ, dtype=torch.float64) + 180, 360) - 180
    assert float(daz.abs().max()) < 2.0
    off = torch.stack([cams.cx - 576, cams.cy - 512], -1)
    assert float(off.abs().max()) <= 65.0 and float(off.abs().max()) > 20.0  # off-centre, within ±65 px
    # every camera looks at a point a little above the arena centre, Z-up (image y points down the world)
    uv, z = cams.project(torch.tensor([[0.0, 0.0, 18.0]]))
    torch.testing.assert_close(uv[:, 0], torch.stack([cams.cx, cams.cy], -1), atol=1e-6, rtol=0)
    down = cams.w2c[:, 1, :3]
    assert bool((down[:, 2] < -0.9).all())


def test_rig_scale_scales_intrinsics_exactly():
    full, small = markerless_mouse_rig(1.0), markerless_mouse_rig(0.25)
    assert (small.width, small.height) == (288, 256)
    torch.testing.assert_close(small.w2c, full.w2c)
    pts = torch.randn(50, 3, dtype=torch.float64) * 30 + torch.tensor([0.0, 0.0, 20.0])
    uv_full, _ = full.project(pts)
    uv_small, _ = small.project(pts)
    torch.testing.assert_close(uv_small, uv_full * 0.25, atol=1e-9, rtol=0)


def test_rig_to_facelift_normalises_and_keeps_every_pixel():
    cams = markerless_mouse_rig()
    g, part = mouse_gaussians_with_parts(MousePose(x=30.0, y=-20.0, heading_deg=40.0, rearing=0.4), n=1000, seed=1)
    center = body_center(g, part)
    fl, scale, translation = rig_to_facelift(cams, center)
    assert math.isclose(float(fl.centers.norm(dim=-1).mean()), 2.7, rel_tol=1e-9)
    torch.testing.assert_close(translation, -center)
    torch.testing.assert_close(fl.w2c[:, :3, :3], cams.w2c[:, :3, :3])  # rotations only: still world Z-up
    torch.testing.assert_close(fl.K, cams.K)
    pts_mm = g.means.double()
    pts_fl = g.to(torch.float64).transformed(scale, translation).means
    uv_mm, z_mm = cams.project(pts_mm)
    uv_fl, z_fl = fl.project(pts_fl)
    assert float((uv_mm - uv_fl).abs().max()) < 1e-6
    torch.testing.assert_close(z_fl, z_mm * scale)
    assert float(pts_fl[part == MOUSE_PARTS.index("trunk")].mean(0).norm()) < 1e-9


# --- the rig folder -----------------------------------------------------------------------------------
def test_rig_folder_layout(smoke_rig: Path):
    meta = json.loads((smoke_rig / "rig.json").read_text())
    for key in ("units", "width", "height", "n_frames", "camera_names", "seed", "frames", "image_scale"):
        assert key in meta
    assert (meta["units"], meta["width"], meta["height"], meta["n_frames"]) == ("mm", 288, 256, 8)
    assert meta["frames"] == list(range(8)) and meta["camera_names"] == [f"cam_{i}" for i in range(6)]
    with open(smoke_rig / "new_cam.pkl", "rb") as f:
        calib = pickle.load(f)
    assert sorted(calib) == list(range(6))
    small = markerless_mouse_rig(0.25)
    for i in range(6):
        assert {"K", "R", "T"} <= set(calib[i]) and np.asarray(calib[i]["T"]).shape == (3,)
        # OpenCV K at the written size (0-based pixel centres: cx_opencv = cx - 0.5)
        np.testing.assert_allclose(calib[i]["K"][0, 0], float(small.fx[i]), rtol=1e-12)
        np.testing.assert_allclose(calib[i]["K"][:2, 2], [float(small.cx[i]) - 0.5, float(small.cy[i]) - 0.5],
                                   atol=1e-9)
        np.testing.assert_allclose(calib[i]["R"], small.w2c[i, :3, :3].numpy(), atol=1e-12)
    for name in meta["camera_names"]:
        assert len(list((smoke_rig / "images" / name).glob("*.png"))) == 8
        assert len(list((smoke_rig / "masks" / name).glob("*.png"))) == 8
    centers = load_centers(smoke_rig)
    assert centers.shape == (8, 3) and len(list((smoke_rig / "gt").glob("frame_*.ply"))) == 8
    rig_info = load_rig(smoke_rig)
    assert rig_info.names == meta["camera_names"] and rig_info.frames == list(range(8))
    images, masks = read_rig_frame(rig_info, 0).as_tensors()
    assert images.shape == (6, 3, 256, 288) and masks.shape == (6, 256, 288) and masks.dtype == torch.bool
    raw = read_image(smoke_rig / "masks" / "cam_0" / "000000.png")
    assert set(torch.unique(raw * 255).tolist()) <= {0.0, 255.0}


def test_images_masks_calibration_and_ground_truth_agree(smoke_rig: Path):
    info = load_rig(smoke_rig)
    for frame in (0, 5):
        images, masks = read_rig_frame(info, frame).as_tensors()
        g = load_ground_truth(smoke_rig, frame)
        rgb, alpha, _ = render_gaussians(g, info.cams)
        again = alpha[..., 0] > 0.5
        for v in range(len(info.names)):
            inter = (again[v] & masks[v]).sum()
            union = (again[v] | masks[v]).sum()
            assert union > 200, f"view {info.names[v]} frame {frame}: the mouse is (almost) not in view"
            assert float(inter / union) > 0.99
            solid = alpha[v, ..., 0] > 0.995  # where the mouse is opaque, the image is its colour
            diff = (images[v].permute(1, 2, 0)[solid] - rgb[v][solid]).abs().max()
            assert float(diff) < 0.01


def test_center_projects_inside_the_mask_in_every_view(smoke_rig: Path):
    info = load_rig(smoke_rig)
    centers = load_centers(smoke_rig)
    for frame in info.frames:
        _, masks = read_rig_frame(info, frame).as_tensors()
        uv, z = info.cams.project(centers[frame][None])
        for v in range(len(info.names)):
            ys, xs = torch.nonzero(masks[v], as_tuple=True)
            assert len(xs) > 0 and z[v, 0] > 0
            u, w = uv[v, 0]
            assert xs.min() <= u <= xs.max() + 1 and ys.min() <= w <= ys.max() + 1, f"{info.names[v]} frame {frame}"
    # the centre is the trunk centroid of the posed mouse
    g, part = mouse_gaussians_with_parts(mouse_trajectory(1, seed=SMOKE["seed"])[0], SMOKE["n_gaussians"], SMOKE["seed"])
    torch.testing.assert_close(centers[0], body_center(g, part), atol=1e-5, rtol=0)


def test_rig_dataset_is_deterministic(smoke_rig: Path, tmp_path: Path):
    again = make_rig_dataset(tmp_path / "again", **{**SMOKE, "n_frames": 2})  # same seed, shorter clip
    other = make_rig_dataset(tmp_path / "other", **{**SMOKE, "n_frames": 1, "seed": 1})
    for frame in (0, 1):
        assert (again / "gt" / f"frame_{frame:06d}.ply").read_bytes() == \
            (smoke_rig / "gt" / f"frame_{frame:06d}.ply").read_bytes()
        for kind in ("images", "masks"):
            for name in ("cam_0", "cam_3"):
                rel = Path(kind) / name / f"{frame:06d}.png"
                assert (again / rel).read_bytes() == (smoke_rig / rel).read_bytes()
    assert (again / "new_cam.pkl").read_bytes() == (smoke_rig / "new_cam.pkl").read_bytes()
    for kind in ("images", "masks"):
        rel = Path(kind) / "cam_0" / "000000.png"
        assert (other / rel).read_bytes() != (smoke_rig / rel).read_bytes()
    assert (other / "gt" / "frame_000000.ply").read_bytes() != (smoke_rig / "gt" / "frame_000000.ply").read_bytes()


def test_jpeg_rig_frames_read_back_close_to_the_png_rig(smoke_rig: Path, tmp_path: Path):
    jpg = make_rig_dataset(tmp_path / "jpg", **{**SMOKE, "n_frames": 1}, image_ext=".jpg")
    assert load_rig(jpg).image_ext == ".jpg" and (jpg / "images" / "cam_0" / "000000.jpg").is_file()
    assert not list(jpg.glob("images/*/*.png")) and (jpg / "masks" / "cam_0" / "000000.png").is_file()
    img_jpg, mask_jpg = read_rig_frame(load_rig(jpg), 0).as_tensors()
    img_png, mask_png = read_rig_frame(load_rig(smoke_rig), 0).as_tensors()
    assert torch.equal(mask_jpg, mask_png)
    assert (img_jpg - img_png).abs().mean() < 0.02  # quality-95 compression noise, nothing moved
    with pytest.raises(ValueError, match="image_ext"):
        make_rig_dataset(tmp_path / "tif", n_frames=1, image_ext=".tif")


def test_workbook_rig_uses_a_given_rig_or_the_synthetic_one(smoke_rig: Path, tmp_path: Path):
    assert workbook_rig(smoke_rig, tmp_path / "unused") == smoke_rig
    assert not (tmp_path / "unused").exists()
    with pytest.raises(FileNotFoundError, match="rig_dir=.*no rig.json"):
        workbook_rig(tmp_path / "empty", tmp_path)
    built = workbook_rig(None, tmp_path / "out", **{**SMOKE, "n_frames": 1})
    assert built == tmp_path / "out" / "rig" and load_rig(built).frames == [0]


def test_rig_folder_names_the_rig_without_building_it(tmp_path: Path):
    assert rig_folder(None, tmp_path / "out") == tmp_path / "out" / "rig"
    assert rig_folder(tmp_path / "lab", tmp_path / "out") == tmp_path / "lab"
    assert not (tmp_path / "out").exists()


def test_ensure_rig_builds_once_and_refuses_other_parameters(tmp_path: Path):
    kwargs = dict(n_frames=1, seed=2, image_scale=0.125, n_gaussians=1000)
    built = ensure_rig(tmp_path / "r", **kwargs)
    stamp = (built / "rig.json").stat().st_mtime_ns
    assert ensure_rig(built, **kwargs) == built and (built / "rig.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="seed"):
        ensure_rig(built, **{**kwargs, "seed": 3})


def test_load_rig_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="rig.json"):
        load_rig(tmp_path)
    built = make_rig_dataset(tmp_path / "r", n_frames=1, seed=0, image_scale=0.125, n_gaussians=1000)
    wrong = built / "images" / "cam_2" / "000000.png"
    write_image(wrong, torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match="cam_2"):
        read_rig_frame(load_rig(built), 0)
    with pytest.raises(FileNotFoundError, match="ground truth"):
        load_ground_truth(built, 5)


def test_rebuilding_drops_old_frames_and_never_overwrites_a_real_rig(tmp_path: Path):
    small = dict(seed=0, image_scale=0.125, n_gaussians=1000)
    built = make_rig_dataset(tmp_path / "r", n_frames=2, **small)
    make_rig_dataset(built, n_frames=1, **small)
    assert not (built / "images" / "cam_0" / "000001.png").exists()
    assert not (built / "gt" / "frame_000001.ply").exists()
    real = tmp_path / "real"
    real.mkdir()
    (real / "rig.json").write_text(json.dumps({"units": "mm", "width": 1152, "height": 1024}))
    with pytest.raises(FileExistsError, match="real rig"):
        make_rig_dataset(real, n_frames=1, **small)


# --- the real rig's lenses (issue 13) -------------------------------------------------------------------
def test_real_lens_rig_has_the_real_skews_scaled_with_the_image():
    full, small = markerless_mouse_rig(1.0, lens="real"), markerless_mouse_rig(0.25, lens="real")
    skews = [c["skew"] for c in RIG_LENSES["real"]]
    assert full.skew.tolist() == pytest.approx(skews) and small.skew.tolist() == pytest.approx([0.25 * k for k in skews])
    torch.testing.assert_close(small.dist, full.dist)
    assert markerless_mouse_rig(1.0).dist is None
    with pytest.raises(ValueError, match="lens"):
        markerless_mouse_rig(1.0, lens="fisheye")


def test_render_refuses_skew_and_render_raw_views_resamples_exactly():
    cams = markerless_mouse_rig(0.125, lens="real")
    g = mouse_gaussians(mouse_trajectory(1, seed=0)[0], n=1000)
    with pytest.raises(ValueError, match="skew"):
        render_gaussians(g, cams)
    # pinhole cameras: render_raw_views is the plain render
    pin = markerless_mouse_rig(0.125)
    rgb, alpha = render_raw_views(g, pin)
    _, alpha_direct, _ = render_gaussians(g, pin)
    assert raw_view_maps(pin) == [None] * 6
    torch.testing.assert_close(alpha, alpha_direct, atol=1e-5, rtol=0)
    # skew + lens: the raw mask is where the lens model (with skew) projects the mouse
    _, alpha = render_raw_views(g, cams)
    uv = project_points_opencv(cams, g.means.double()).numpy()
    for v in range(len(cams)):
        m = alpha[v, ..., 0].numpy() > 0.5
        iu = np.clip(np.floor(uv[v]).astype(int), 0, [cams.width - 1, cams.height - 1])
        inside = (uv[v] >= 0).all(1) & (uv[v] < [cams.width, cams.height]).all(1)
        dilated = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                dilated[np.clip(ys + dy, 0, m.shape[0] - 1), np.clip(xs + dx, 0, m.shape[1] - 1)] = True
        assert dilated[iu[inside, 1], iu[inside, 0]].mean() > 0.97, f"view {v}"


def test_real_lens_rig_folder_loads_with_its_skew(tmp_path: Path):
    built = make_rig_dataset(tmp_path / "r", n_frames=1, seed=0, image_scale=0.125, n_gaussians=1000, lens="real")
    info = load_rig(built)
    assert info.cams.dist is not None and float(info.cams.skew.abs().max()) > 0.1
    assert info.meta["generator"]["lens"] == "real"
    with pytest.raises(ValueError, match="lens"):
        ensure_rig(built, lens="pinhole")


# --- rig.json names its calibration; one frame reader; ground truth (issue 11) -----------------------------
def _rig_json(folder: Path, cams, calibration: dict | None = None, names: list[str] | None = None) -> Path:
    meta = {"units": "mm", "width": cams.width, "height": cams.height, "frames": [0],
            "camera_names": names or list(cams.names), **({"calibration": calibration} if calibration else {})}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rig.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("fmt,file", [("dannce", "calib/markerless_mouse_1_dannce.mat"), ("anipose", "calibration.toml")])
def test_a_rig_json_naming_a_dannce_or_anipose_calibration_loads_the_cameras_of_the_mammal_pkl(tmp_path: Path, fmt, file):
    """A lab points the workbook at its rig with the calibration it has: the same cameras (skew, strong lens,
    the half pixel applied once) through load_rig as the MAMMAL new_cam.pkl of an older rig folder (no key)."""
    cams = markerless_mouse_rig(0.25, lens="real")        # workbook pixels
    old = _rig_json(tmp_path / "pkl", cams)
    save_mammal_pkl(cams, old / "new_cam.pkl", pixel_centers="workbook")
    lab = _rig_json(tmp_path / fmt, cams, {"format": fmt, "file": file})
    {"dannce": save_dannce_mat, "anipose": save_anipose_toml}[fmt](cams, lab / file, pixel_centers="workbook")
    a, b = load_rig(old), load_rig(lab)
    assert (a.calibration_format, a.calibration_file) == ("mammal", old / "new_cam.pkl")
    assert (b.calibration_format, b.calibration_file) == (fmt, lab / file)
    assert b.names == a.names == b.cams.names == cams.names and (b.width, b.height) == (cams.width, cams.height)
    torch.testing.assert_close(a.cams.K, cams.K, atol=1e-9, rtol=0)
    torch.testing.assert_close(b.cams.K, a.cams.K, atol=1e-9, rtol=0)
    torch.testing.assert_close(b.cams.w2c, a.cams.w2c, atol=1e-8, rtol=0)
    torch.testing.assert_close(b.cams.dist, a.cams.dist, atol=1e-12, rtol=0)


def test_calibration_cameras_are_matched_to_rig_json_by_name_or_else_by_position(tmp_path: Path):
    cams = markerless_mouse_rig(0.125)
    # named: rig.json's order wins, and a subset of the calibrated cameras is fine
    lab = _rig_json(tmp_path / "named", cams, {"format": "anipose", "file": "calibration.toml"},
                    names=["cam_3", "cam_0", "cam_5"])
    save_anipose_toml(cams, lab / "calibration.toml", pixel_centers="workbook")
    r = load_rig(lab)
    assert r.cams.names == ["cam_3", "cam_0", "cam_5"]
    torch.testing.assert_close(r.cams.w2c, cams.w2c[[3, 0, 5]], atol=1e-8, rtol=0)
    # unnamed (a real MAMMAL new_cam.pkl has no names): by position, as rig.json names them
    unnamed = _rig_json(tmp_path / "unnamed", cams, names=[f"view{i}" for i in range(6)])
    save_mammal_pkl(cams.replace(names=[str(i) for i in range(6)]), unnamed / "new_cam.pkl", pixel_centers="workbook")
    r = load_rig(unnamed)
    assert r.cams.names == [f"view{i}" for i in range(6)]
    torch.testing.assert_close(r.cams.w2c, cams.w2c, atol=1e-12, rtol=0)
    # some names match, some do not: refused, naming both lists
    partial = _rig_json(tmp_path / "partial", cams, names=["cam_0", "cam_1", "cam_2", "cam_3", "cam_4", "side"])
    save_mammal_pkl(cams, partial / "new_cam.pkl", pixel_centers="workbook")
    with pytest.raises(RigError, match=r"new_cam\.pkl: 6 cameras named .*cam_5.* names 6: .*side"):
        load_rig(partial)


def test_calibration_key_errors_name_the_file_and_the_fix(tmp_path: Path):
    cams = markerless_mouse_rig(0.125)
    bad = _rig_json(tmp_path / "fmt", cams, {"format": "opencv_yaml", "file": "cams.yaml"})
    with pytest.raises(RigError, match=r"rig\.json: calibration format 'opencv_yaml' is not one of"):
        load_rig(bad)
    no_file = _rig_json(tmp_path / "nofile", cams, {"format": "dannce"})
    with pytest.raises(RigError, match=r'rig\.json: "calibration" must be'):
        load_rig(no_file)
    missing = _rig_json(tmp_path / "missing", cams, {"format": "dannce", "file": "calib.mat"})
    with pytest.raises(FileNotFoundError, match=r"calib\.mat"):
        load_rig(missing)
    other_size = _rig_json(tmp_path / "size", cams.replace(width=2 * cams.width, height=2 * cams.height),
                           {"format": "anipose", "file": "calibration.toml"})
    save_anipose_toml(cams, other_size / "calibration.toml", pixel_centers="workbook")
    with pytest.raises(RigError, match=r"calibration\.toml: the anipose calibration is for 144x128 .* rig\.json says 288x256"):
        load_rig(other_size)


def test_the_synthetic_rig_names_its_calibration_and_an_old_rig_json_without_the_key_loads_the_same(smoke_rig: Path,
                                                                                                     tmp_path: Path):
    meta = json.loads((smoke_rig / "rig.json").read_text())
    assert meta["calibration"] == {"format": "mammal", "file": "new_cam.pkl"}
    old = tmp_path / "old"
    old.mkdir()
    (old / "new_cam.pkl").write_bytes((smoke_rig / "new_cam.pkl").read_bytes())
    (old / "rig.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "calibration"}))
    a, b = load_rig(smoke_rig), load_rig(old)
    assert torch.equal(a.cams.K, b.cams.K) and torch.equal(a.cams.w2c, b.cams.w2c) and a.names == b.names


def test_one_frame_reader_gives_opencvs_arrays_and_the_librarys_tensors(smoke_rig: Path):
    r = load_rig(smoke_rig)
    rf = read_rig_frame(r, 3)
    assert rf.images[0].dtype == np.uint8 and rf.images[0].shape == (r.height, r.width, 3)   # BGR as decoded
    images, masks = rf.as_tensors()
    for v, name in enumerate(r.names):
        assert torch.equal(images[v], read_image(smoke_rig / "images" / name / "000003.png"))   # RGB float [0,1]
        assert torch.equal(masks[v], read_image(smoke_rig / "masks" / name / "000003.png")[0] > 0.5)
    assert rf.image_files[1] == smoke_rig / "images" / "cam_1" / "000003.png"


def test_has_ground_truth_is_the_synthetic_rigs_gt_folder(smoke_rig: Path, tmp_path: Path):
    assert has_ground_truth(smoke_rig) and has_ground_truth(load_rig(smoke_rig))
    real = tmp_path / "real"
    real.mkdir()
    for name in ("rig.json", "new_cam.pkl"):
        (real / name).write_bytes((smoke_rig / name).read_bytes())
    assert not has_ground_truth(real) and not has_ground_truth(load_rig(real))
