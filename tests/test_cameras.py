"""cameras.py, calibration.py and camera_report.py against FaceLift's real camera files, hand-computed rays, and each rig format's own convention."""
from __future__ import annotations

import json
import math
import pickle

import cv2
import numpy as np
import pytest
import scipy.io
import toml
import torch
from scipy.spatial.transform import Rotation

from facelift_lib import calibration, camera_report
from facelift_lib import cameras as C
from facelift_lib.gaussians import Gaussians


# --- helpers -------------------------------------------------------------------------------
def frames_w2c(path) -> torch.Tensor:
    with open(path) as f:
        return torch.tensor([fr["w2c"] for fr in json.load(f)["frames"]], dtype=torch.float64)


def mm_rig(seed: int = 0, with_dist: bool = True) -> C.Cameras:
    """A 4-camera mm rig: different intrinsics per camera, cameras not aimed exactly at the arena centre."""
    g = np.random.default_rng(seed)
    pos = np.array([[400.0, 30.0, 250.0], [-20.0, 420.0, 300.0], [-380.0, -40.0, 220.0], [10.0, -410.0, 280.0]])
    w2c = C.look_at_w2c(torch.tensor(pos), target=(12.0, -8.0, 35.0))
    K = C.intrinsics(g.uniform(1100, 1300, 4), g.uniform(1100, 1300, 4), g.uniform(560, 590, 4),
                     g.uniform(500, 525, 4), 4)
    dist = None
    if with_dist:
        dist = torch.tensor(np.column_stack([g.uniform(-0.2, 0.2, 4), g.uniform(-0.1, 0.1, 4), g.uniform(-2e-3, 2e-3, 4),
                                             g.uniform(-2e-3, 2e-3, 4), g.uniform(-0.05, 0.05, 4)]))
    return C.Cameras(K=K, w2c=w2c, width=1152, height=1024, dist=dist, names=["north", "west", "south", "east"])


def arena_points(n: int = 40, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform([-40, -40, 0], [60, 40, 70], size=(n, 3))


def opencv_model_np(K: np.ndarray, R: np.ndarray, T: np.ndarray, dist: np.ndarray, X: np.ndarray) -> np.ndarray:
    """OpenCV's documented projection (x_cam = R X + T, 5-term distortion), written out; 0-based pixels."""
    cam = X @ R.T + T
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    k1, k2, p1, p2, k3 = dist
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


# --- FaceLift reference cameras ------------------------------------------------------------------
def test_orbit_reproduces_standard_cameras(reference_dir):
    path = reference_dir / "standard_cameras" / "opencv_cameras.json"
    ref = C.Cameras.from_opencv_json(path)
    ours = C.orbit_cameras(C.FACELIFT_FILE_AZIMUTHS, 0.0)
    assert len(ref) == 6
    torch.testing.assert_close(ours.w2c, frames_w2c(path), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.K, ref.K, atol=1e-9, rtol=0)


def test_orbit_reproduces_gslrm_training_cameras(reference_dir):
    path = reference_dir / "human_sample" / "gslrm" / "sample_000" / "opencv_cameras.json"
    ref = C.Cameras.from_opencv_json(path)
    ours = C.orbit_cameras([11.25 * i for i in range(32)], 20.0, fx=float(ref.fx[0]))
    assert len(ref) == 32
    torch.testing.assert_close(ours.w2c, ref.w2c, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.K, ref.K, atol=1e-9, rtol=0)


def test_facelift_standard_is_reordered_file_and_matches_inference_selection(reference_dir):
    file_w2c = frames_w2c(reference_dir / "standard_cameras" / "opencv_cameras.json")
    std = C.facelift_standard()
    torch.testing.assert_close(std.w2c, file_w2c[[2, 1, 0, 5, 4, 3]], atol=1e-5, rtol=0)
    with open(reference_dir / "standard_cameras" / "inference_cameras.json") as f:
        inf = json.load(f)
    assert list(C.FACELIFT_CAMERA_INDICES) == inf["camera_indices"]
    assert std.names == inf["mvdiffusion_view_order"]
    for i, sel in enumerate(inf["selected"]):
        assert sel["view_slot"] == i and sel["view_type"] == std.names[i]
        torch.testing.assert_close(std.c2w[i], torch.tensor(sel["c2w"], dtype=torch.float64), atol=1e-5, rtol=0)
        fx, fy, cx, cy = sel["fxfycxcy"]
        assert (float(std.fx[i]), float(std.fy[i]), float(std.cx[i]), float(std.cy[i])) == pytest.approx((fx, fy, cx, cy))


def test_mouse_standard_6view_is_its_spec_and_both_presets_write_their_type(tmp_path):
    d = camera_report.describe(C.mouse_standard_6view())
    np.testing.assert_allclose(d["distance"], 2.7, atol=1e-9)
    np.testing.assert_allclose(d["elevation_deg"], 20.0, atol=1e-9)
    np.testing.assert_allclose(d["azimuth_deg"], [0, 60, 120, 180, 240, 300], atol=1e-9)
    np.testing.assert_allclose(d[["fx", "fy"]], 548.99, atol=1e-9)
    np.testing.assert_allclose(d[["pp_dx_px", "pp_dy_px"]], 0.0, atol=1e-9)  # cx = cy = 256 at 512²
    np.testing.assert_allclose(d["lookat_error_deg"], 0.0, atol=1e-6)
    for preset, name in ((C.mouse_standard_6view(), "mouse_standard_6view"), (C.facelift_standard(), "facelift_standard")):
        with open(preset.to_opencv_json(tmp_path / f"{name}.json")) as f:
            written = json.load(f)
        assert written["camera_type"] == name and written["camera_distance"] == pytest.approx(2.7)
        assert C.Cameras.from_opencv_json(tmp_path / f"{name}.json").meta["camera_type"] == name


@pytest.mark.parametrize("rel", ["standard_cameras/opencv_cameras.json",
                                 "human_sample/gslrm/sample_000/opencv_cameras.json"])
def test_json_round_trip_keeps_every_key(reference_dir, tmp_path, rel):
    src = reference_dir / rel
    out = C.Cameras.from_opencv_json(src).to_opencv_json(tmp_path / "cams.json")
    with open(src) as f, open(out) as g:
        a, b = json.load(f), json.load(g)
    assert a == b  # id, file_path, blender_* keys and every number survive
    extra = {k for fr in a["frames"] for k in fr} - set(C._FRAME_KEYS)
    assert extra >= {"blender_camera_name", "blender_camera_location"}


# --- rays ----------------------------------------------------------------------------------
def simple_camera() -> C.Cameras:
    """Identity rotation at (0,0,-2): w2c translation = -R C = (0,0,2). fx != fy to catch swaps."""
    w2c = torch.eye(4, dtype=torch.float64)[None].clone()
    w2c[0, 2, 3] = 2.0
    return C.Cameras(K=C.intrinsics(100.0, 50.0, 32.0, 24.0, 1), w2c=w2c, width=64, height=48)


@pytest.mark.parametrize("x,y", [(63, 0), (31, 23), (0, 47)])
def test_rays_match_hand_computation(x, y):
    cam = simple_camera()
    o, d = C.pixel_rays(cam, dtype=torch.float64)
    dx, dy = (x + 0.5 - 32.0) / 100.0, (y + 0.5 - 24.0) / 50.0   # pixel centre at +0.5
    n = math.sqrt(dx * dx + dy * dy + 1.0)
    want_d = torch.tensor([dx / n, dy / n, 1.0 / n], dtype=torch.float64)
    torch.testing.assert_close(d[0, y, x], want_d, atol=1e-12, rtol=0)
    torch.testing.assert_close(o[0, y, x], torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # nearest point to the origin on the ray (0,0,-2) + t d: t = 2 d_z
    t = 2.0 / n
    want_p = torch.tensor([t * dx / n, t * dy / n, -2.0 + t / n], dtype=torch.float64)
    emb = C.plucker_rays(cam, "facelift", dtype=torch.float64)[0, :, y, x]
    torch.testing.assert_close(emb, torch.cat([want_d, want_p]), atol=1e-12, rtol=0)


def test_centre_pixel_looks_at_target():
    # odd size: pixel 32's centre (32.5) is exactly cx = W/2, so its ray is the optical axis
    cams = C.orbit_cameras([0.0, 70.0, 200.0], 25.0, width=65, height=65, target=(0.1, -0.2, 0.3))
    o, d = C.pixel_rays(cams, dtype=torch.float64)
    to_target = torch.nn.functional.normalize(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64) - cams.centers, dim=-1)
    torch.testing.assert_close(d[:, 32, 32], to_target, atol=1e-12, rtol=0)


def test_facelift_embedding_is_nearest_point_and_moment_is_invariant():
    cams = C.orbit_cameras([10.0, 130.0], 20.0, width=16, height=12, cx=7.3, cy=6.1)
    o, d = C.pixel_rays(cams, dtype=torch.float64)
    fl = C.plucker_rays(cams, "facelift", dtype=torch.float64).permute(0, 2, 3, 1)
    p = fl[..., 3:]
    torch.testing.assert_close(fl[..., :3], d)
    assert (p * d).sum(-1).abs().max() < 1e-12                            # orthogonal to d
    for s in (-1.0, 0.5, 3.0):                                          # no point on the ray is nearer
        assert ((o + s * d).norm(dim=-1) >= p.norm(dim=-1) - 1e-12).all()
    mom = C.plucker_rays(cams, "moment", dtype=torch.float64).permute(0, 2, 3, 1)
    torch.testing.assert_close(mom[..., :3], torch.linalg.cross(o, d))
    torch.testing.assert_close(mom[..., 3:], d)
    for s in (-2.0, 0.7, 5.0):                                          # o x d does not care where o is on the ray
        torch.testing.assert_close(torch.linalg.cross(o + s * d, d), mom[..., :3], atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.cross(p, d), mom[..., :3], atol=1e-12, rtol=0)


# --- crop and resize -------------------------------------------------------------------------
@pytest.mark.parametrize("x0,y0,w,h,out_w,out_h", [(100, 40, 600, 500, 512, 512),     # non-uniform
                                                   (0, 0, 1152, 1024, 300, 700),
                                                   (333, 17, 256, 256, 512, 512)])
def test_crop_resize_moves_projections_like_the_pixel_mapping(x0, y0, w, h, out_w, out_h):
    cams = mm_rig(with_dist=False)
    X = torch.as_tensor(arena_points())
    uv, _ = cams.project(X)
    new = cams.crop_resize(x0, y0, w, h, out_w, out_h)
    uv2, _ = new.project(X)
    want = torch.stack([(uv[..., 0] - x0) * out_w / w, (uv[..., 1] - y0) * out_h / h], -1)
    torch.testing.assert_close(uv2, want, atol=1e-9, rtol=0)
    assert (new.width, new.height) == (out_w, out_h)
    torch.testing.assert_close(new.w2c, cams.w2c)


def test_crop_resize_per_view_offsets_and_scaled_to():
    cams = mm_rig(with_dist=False)
    x0, y0 = torch.tensor([10.0, 200.0, 5.0, 77.0]), torch.tensor([0.0, 13.0, 300.0, 1.0])
    new = cams.crop_resize(x0, y0, 640, 480, 320, 400)
    X = torch.as_tensor(arena_points())
    uv, uv2 = cams.project(X)[0], new.project(X)[0]
    torch.testing.assert_close(uv2[..., 0], (uv[..., 0] - x0[:, None]) * 0.5, atol=1e-9, rtol=0)
    torch.testing.assert_close(uv2[..., 1], (uv[..., 1] - y0[:, None]) * 400 / 480, atol=1e-9, rtol=0)
    s = cams.scaled_to(576, 256)
    torch.testing.assert_close(s.project(X)[0], uv * torch.tensor([0.5, 0.25], dtype=torch.float64), atol=1e-9, rtol=0)


def test_cameras_are_rescaled_one_way_square_by_default():
    """scaled_to(size) is square; the standard spec at a size, the rays at another size and the GS-LRM dataset's
    intrinsics are that same rescale (fx, cx * size / 512 for the 512² spec)."""
    from facelift_lib.gslrm.data import resize_views

    spec = C.mouse_standard_6view()
    small = spec.scaled_to(64)
    assert (small.width, small.height) == (64, 64)
    torch.testing.assert_close(small.K, spec.scaled_to(64, 64).K, atol=0, rtol=0)
    torch.testing.assert_close(small.K[:, :2], spec.K[:, :2] * 64 / 512, atol=1e-12, rtol=0)
    torch.testing.assert_close(C.standard_cameras("mouse_standard_6view", 64).K, small.K, atol=0, rtol=0)
    for a, b in zip(C.pixel_rays(spec, 64, 64), C.pixel_rays(small)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    _, K, _ = resize_views(torch.rand(6, 4, 512, 512), spec, 64, torch.ones(3))
    torch.testing.assert_close(K, small.K.float(), atol=0, rtol=0)


def test_crop_resize_agrees_with_cv2_resize_of_an_image():
    """A blob drawn where a point projects lands, after numpy crop + cv2.resize, where the new camera projects it."""
    cams = mm_rig(with_dist=False)[[0]]
    X = torch.tensor([[20.0, -10.0, 40.0]], dtype=torch.float64)
    u, v = cams.project(X)[0][0, 0].tolist()
    ys, xs = np.mgrid[0:cams.height, 0:cams.width].astype(np.float64) + 0.5
    img = np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)
    x0, y0, w, h, out_w, out_h = int(u) - 101, int(v) - 77, 203, 161, 457, 229  # non-uniform, not integer factors
    crop = cv2.resize(img[y0:y0 + h, x0:x0 + w], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float64) + 0.5
    centroid = np.array([(crop * xx).sum(), (crop * yy).sum()]) / crop.sum()
    want = cams.crop_resize(x0, y0, w, h, out_w, out_h).project(X)[0][0, 0].numpy()
    assert np.abs(centroid - want).max() < 0.05
    # the 0-based convention (cx - 0.5) would be off by 0.5*(s-1) px; make sure the test can see that
    wrong = (np.array([u, v]) - 0.5 - [x0, y0]) * [out_w / w, out_h / h]
    assert np.abs(centroid - wrong).max() > 0.3


def test_intrinsics_helpers_compose_as_matrices():
    K = C.intrinsics(500.0, 480.0, 320.0, 240.0, 1)[0]
    Kc = C.crop_intrinsics(K, 20.0, 30.0)
    assert Kc[0, 2] == 300.0 and Kc[1, 2] == 210.0 and Kc[0, 0] == 500.0
    Kr = C.resize_intrinsics(K, 0.5, 2.0)
    assert (Kr[0, 0], Kr[1, 1], Kr[0, 2], Kr[1, 2]) == (250.0, 960.0, 160.0, 480.0)


# --- world frames --------------------------------------------------------------------------
def test_similarity_normalize_distance_projections_and_gaussians():
    cams = mm_rig(with_dist=False)
    center = torch.tensor([12.0, -8.0, 35.0], dtype=torch.float64)
    new, s, t = C.similarity_normalize(cams, center)
    assert float((new.centers.norm(dim=-1)).mean()) == pytest.approx(2.7, abs=1e-12)
    R = new.w2c[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12, rtol=0)
    X = torch.as_tensor(arena_points())
    Xn = s * (X - center)
    torch.testing.assert_close(new.project(Xn)[0], cams.project(X)[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(new.project(Xn)[1], s * cams.project(X)[1], atol=1e-9, rtol=0)
    torch.testing.assert_close(new.centers, s * (cams.centers + t), atol=1e-12, rtol=0)
    g = Gaussians(means=X, quats=torch.tensor([[1.0, 0, 0, 0]]).double().expand(len(X), 4),
                  scales=torch.ones(len(X), 3).double(), opacities=torch.ones(len(X)).double(),
                  colors=torch.zeros(len(X), 3).double())
    torch.testing.assert_close(g.transformed(s, t).means, Xn)   # same two numbers move the gaussians


def yup_orbit(az_deg, el_deg, dist=2.7) -> C.Cameras:
    az, el = np.radians(az_deg), np.radians(el_deg)
    pos = dist * np.stack([np.cos(el) * np.sin(az), np.full_like(az, np.sin(el)), np.cos(el) * np.cos(az)], -1)
    return C.Cameras(K=C.intrinsics(500.0, 500.0, 256.0, 256.0, len(az)),
                     w2c=C.look_at_w2c(torch.tensor(pos), up=(0.0, 1.0, 0.0)), width=512, height=512)


def test_yup_zup_round_trip_and_orbit_equivalence():
    T = C.yup_to_zup()
    torch.testing.assert_close(T @ C.zup_to_yup(), torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(T[:3, :3] @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                               torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    az = np.array([0.0, 45.0, 150.0, 300.0])
    yup = yup_orbit(az, 25.0)
    assert C.is_z_up(yup) == (False, "+Y")
    zup = C.transform_world(yup, T)
    assert C.is_z_up(zup) == (True, "+Z")
    # (x, y, z)_Y-up -> (x, -z, y): Y-up azimuth a (from +Z towards +X) becomes Z-up azimuth a - 90
    torch.testing.assert_close(zup.w2c, C.orbit_cameras(az - 90.0, 25.0, fx=500.0).w2c, atol=1e-12, rtol=0)
    torch.testing.assert_close(C.transform_world(zup, C.zup_to_yup()).w2c, yup.w2c, atol=1e-12, rtol=0)


def test_transform_world_refuses_reflections_and_shears():
    cams = C.facelift_standard()
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="reflection"):
        C.transform_world(cams, flip)
    with pytest.raises(ValueError, match="uniform scale"):
        C.transform_world(cams, torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)))


def test_up_axis_from_positions_when_up_vectors_disagree():
    # four cameras straight above the target, rolled 0/90/180/270°: their up vectors cancel
    g = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    for i, a in enumerate(np.radians([0, 90, 180, 270])):
        Rz = torch.tensor(Rotation.from_euler("z", a).as_matrix())
        R_c2w = Rz @ torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]], dtype=torch.float64)  # looks down -Z
        g[i, :3, :3], g[i, :3, 3] = R_c2w, torch.tensor([0.01 * i, 0.0, 3.0])
    cams = C.Cameras(K=C.intrinsics(500.0, 500.0, 256.0, 256.0, 4), w2c=torch.linalg.inv(g), width=512, height=512)
    assert C.detect_up_axis(cams) == "+Z"


# --- describe / mismatches / ray distance -------------------------------------------------------
def test_describe_standard_cameras():
    df = camera_report.describe(C.facelift_standard()).set_index("name")
    np.testing.assert_allclose(df["distance"], 2.7, atol=1e-12)
    np.testing.assert_allclose(df["elevation_deg"], 0.0, atol=1e-9)
    want_az = {"front": 270, "front_right": 225, "right": 180, "back": 90, "left": 0, "front_left": 315}
    np.testing.assert_allclose(df["azimuth_deg"], [want_az[n] for n in df.index], atol=1e-9)
    want_gap = {"left": 90, "back": 90, "right": 45, "front_right": 45, "front": 45, "front_left": 45}
    np.testing.assert_allclose(df["azimuth_gap_deg"], [want_gap[n] for n in df.index], atol=1e-9)
    np.testing.assert_allclose(df[["lookat_error_deg", "up_angle_to_z_deg", "roll_deg", "pp_dx_px", "pp_dy_px"]],
                               0.0, atol=1e-6)
    np.testing.assert_allclose(df["fy_over_fx"], 1.0)
    np.testing.assert_allclose(df["hfov_deg"], np.degrees(2 * np.arctan(256 / C.FACELIFT_FOCAL)))
    np.testing.assert_allclose(df[["up_x", "up_y", "up_z"]], [[0, 0, 1]] * 6, atol=1e-9)


def test_describe_measures_elevation_lookat_error_and_roll():
    cams = C.orbit_cameras([30.0], 20.0, distance=3.0)
    df = camera_report.describe(cams).iloc[0]
    assert df["elevation_deg"] == pytest.approx(20.0) and df["up_angle_to_z_deg"] == pytest.approx(20.0)
    assert df["azimuth_deg"] == pytest.approx(30.0) and df["azimuth_gap_deg"] == 360.0
    # aim 0.3 beside the target (perpendicular to the line of sight): look-at error atan(0.3/3)
    off = C.Cameras(K=cams.K, w2c=C.look_at_w2c(torch.tensor([[3.0, 0.0, 0.0]]), target=(0.0, 0.3, 0.0)),
                    width=512, height=512)
    assert camera_report.describe(off)["lookat_error_deg"].iloc[0] == pytest.approx(math.degrees(math.atan(0.1)))
    roll = torch.eye(4, dtype=torch.float64)
    roll[:3, :3] = torch.tensor(Rotation.from_euler("z", 10, degrees=True).as_matrix())  # about the optical axis
    rolled = cams.replace(w2c=roll @ cams.w2c)
    r = camera_report.describe(rolled).iloc[0]
    assert abs(r["roll_deg"]) == pytest.approx(10.0) and r["lookat_error_deg"] == pytest.approx(0.0, abs=1e-6)


def test_domain_mismatches_grades_what_differs():
    std = C.facelift_standard()
    same = camera_report.domain_mismatches(std, std)
    assert (same["severity"] == "ok").all()
    rig = mm_rig()
    rows = camera_report.domain_mismatches(std, rig, target_b=(0.0, 0.0, 0.0)).set_index("quantity")
    el = camera_report.describe(rig)["elevation_deg"].mean()
    assert rows.loc["elevation_mean_deg", "value_b"] == pytest.approx(el)
    assert rows.loc["elevation_mean_deg", "severity"] == "major"            # ~30° above FaceLift's 0°
    assert rows.loc["image_aspect", "severity"] == "minor"                  # 1152/1024 = 1.125
    assert rows.loc["lookat_error_max_deg", "value_b"] > 2.0                # aimed at (12,-8,35), not the origin
    assert rows.loc["distortion_max_px", "value_b"] > 0 and rows.loc["distortion_max_px", "value_a"] == 0
    assert rows.loc["up_axis_is_z", "severity"] == "ok"
    lax = camera_report.domain_mismatches(std, rig, thresholds=camera_report.MismatchThresholds(elevation_mean_deg=(90.0, 90.0)))
    assert lax.set_index("quantity").loc["elevation_mean_deg", "severity"] == "ok"


def test_distortion_displacement_matches_cv2():
    cams = mm_rig()
    disp = calibration.distortion_displacement_px(cams)
    # the same border pixels, distorted by cv2: undistorted normalised coords as points at z=1
    v = 0
    K, d = cams.K[v].numpy(), cams.dist[v].numpy()
    corner = np.array([[(0 - K[0, 2]) / K[0, 0], (0 - K[1, 2]) / K[1, 1], 1.0]])
    uv, _ = cv2.projectPoints(corner, np.zeros(3), np.zeros(3), K, d)
    assert disp[v] >= np.linalg.norm(uv[0, 0]) - 1e-9   # max over the border includes the corner
    assert disp[v] > 0


def test_ray_distance_to_reference():
    std = C.facelift_standard()
    assert camera_report.ray_distance_to_reference(std[[4, 0, 2]], std).abs().max() < 1e-12
    dists = [float(camera_report.ray_distance_to_reference(C.orbit_cameras([270.0], el), std)[0]) for el in (5.0, 20.0, 40.0)]
    assert 0 < dists[0] < dists[1] < dists[2]
    m = camera_report.ray_distance_matrix(C.orbit_cameras([270.0, 0.0], 0.0), std)
    assert m.shape == (2, 6) and m.argmin(1).tolist() == [0, 4]   # front and left


# --- rig importers -------------------------------------------------------------------------
def test_mammal_pkl_fixture_round_trip_and_projection(tmp_path):
    rig = mm_rig()
    K_cv = calibration._shift_pixels(rig.K, -0.5).numpy()   # what an OpenCV calibration stores (pixel centres at integers)
    R, T, D = rig.w2c[:, :3, :3].numpy(), rig.w2c[:, :3, 3].numpy(), rig.dist.numpy()
    fixture = {i: {"K": K_cv[i], "R": R[i], "T": T[i], "dist": D[i]} for i in range(4)}
    with open(tmp_path / "new_cam.pkl", "wb") as f:
        pickle.dump(fixture, f)
    cams = calibration.load_mammal_pkl(tmp_path / "new_cam.pkl")
    assert (cams.width, cams.height, cams.names) == (1152, 1024, ["0", "1", "2", "3"])
    torch.testing.assert_close(cams.K, torch.as_tensor(K_cv), atol=1e-12, rtol=0)   # OpenCV pixels, as stored
    wb = calibration.load_mammal_pkl(tmp_path / "new_cam.pkl", pixel_centers="workbook")
    torch.testing.assert_close(wb.K, rig.K, atol=1e-6, rtol=0)
    torch.testing.assert_close(calibration.opencv_to_workbook_pixels(cams).K, wb.K, atol=1e-12, rtol=0)
    torch.testing.assert_close(cams.w2c, rig.w2c, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.dist, rig.dist, atol=1e-12, rtol=0)
    X = arena_points()
    want = np.stack([opencv_model_np(K_cv[i], R[i], T[i], D[i], X) for i in range(4)])
    np.testing.assert_allclose(calibration.project_points_opencv(cams, X).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(calibration.project_points_opencv(wb, X).numpy(), want + 0.5, atol=1e-6)
    # our writer produces the same schema and reads back
    out = calibration.save_mammal_pkl(cams.replace(names=rig.names), tmp_path / "ours.pkl")
    with open(out, "rb") as f:
        raw = pickle.load(f)
    assert sorted(raw) == [0, 1, 2, 3] and set(raw[0]) == {"K", "R", "T", "dist", "name"}
    np.testing.assert_allclose(raw[2]["K"], K_cv[2], atol=1e-9)
    back = calibration.load_mammal_pkl(out)
    assert back.names == rig.names
    torch.testing.assert_close(back.w2c, cams.w2c, atol=1e-12, rtol=0)


def test_mammal_pkl_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="new_cam.pkl"):
        calibration.load_mammal_pkl(tmp_path / "missing.pkl")
    rig = mm_rig()
    bad = {i: {"K": rig.K[i].numpy(), "R": rig.w2c[i, :3, :3].numpy(), "T": rig.w2c[i, :3, 3].numpy()} for i in range(2)}
    bad[0]["dist"] = np.zeros(5)
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(ValueError, match="lack 'dist'"):
        calibration.load_mammal_pkl(tmp_path / "bad.pkl")


def dannce_fixture(rig: C.Cameras, k3: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Label3D/DANNCE params written from the definition: K' with 1-based pixels, row-vector r = R^T, t = T^T."""
    params = np.empty((len(rig), 1), dtype=object)
    raw = []
    for i in range(len(rig)):
        K0 = calibration._shift_pixels(rig.K[i], -0.5).numpy()          # 0-based OpenCV intrinsics
        K1 = K0.copy()
        K1[0, 2] += 1.0
        K1[1, 2] += 1.0                                      # MATLAB pixels are 1-based
        k1, k2, p1, p2, kk3 = rig.dist[i].tolist()
        p = {"K": K1.T, "r": rig.w2c[i, :3, :3].numpy().T, "t": rig.w2c[i, :3, 3].numpy()[None, :],
             "RDistort": np.array([[k1, k2, kk3]] if k3 else [[k1, k2]]), "TDistort": np.array([[p1, p2]])}
        params[i, 0] = p
        raw.append(p)
    return params, raw


def dannce_project(p: dict, X: np.ndarray) -> np.ndarray:
    """DANNCE/MATLAB projection: [X 1]·[r; t] -> distort (normalised) -> [xd yd 1]·K, then 1-based -> 0-based."""
    cam = np.hstack([X, np.ones((len(X), 1))]) @ np.vstack([p["r"], p["t"]])
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    k = p["RDistort"].reshape(-1)
    k3 = k[2] if k.size == 3 else 0.0
    p1, p2 = p["TDistort"].reshape(-1)
    r2 = x * x + y * y
    rad = 1 + k[0] * r2 + k[1] * r2 ** 2 + k3 * r2 ** 3
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uvw = np.column_stack([xd, yd, np.ones_like(xd)]) @ p["K"]
    return uvw[:, :2] / uvw[:, 2:] - 1.0


@pytest.mark.parametrize("k3", [True, False])
def test_dannce_mat_fixture_round_trip_and_projection(tmp_path, k3):
    rig = mm_rig()
    if not k3:
        rig.dist[:, 4] = 0.0
    params, raw = dannce_fixture(rig, k3)
    camnames = np.empty((1, len(rig)), dtype=object)
    camnames[0, :] = rig.names
    scipy.io.savemat(tmp_path / "cal_dannce.mat", {"params": params, "camnames": camnames,
                                                   "labelData": np.zeros((1, 1))})
    cams = calibration.load_dannce_mat(tmp_path / "cal_dannce.mat", 1152, 1024)
    assert cams.names == rig.names
    # OpenCV 0-based principal point: the file's (cx - 1, cy - 1), focal lengths unchanged
    K_file = torch.as_tensor(np.stack([p["K"].T for p in raw]))
    torch.testing.assert_close(cams.K[:, :2, 2], K_file[:, :2, 2] - 1.0, atol=1e-12, rtol=0)
    torch.testing.assert_close(cams.fx, K_file[:, 0, 0], atol=1e-12, rtol=0)
    wb = calibration.load_dannce_mat(tmp_path / "cal_dannce.mat", 1152, 1024, pixel_centers="workbook")
    torch.testing.assert_close(wb.K, rig.K, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.w2c, rig.w2c, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.dist, rig.dist, atol=1e-12, rtol=0)
    X = arena_points()
    want = np.stack([dannce_project(p, X) for p in raw])
    np.testing.assert_allclose(calibration.project_points_opencv(cams, X).numpy(), want, atol=1e-6)
    back = calibration.load_dannce_mat(calibration.save_dannce_mat(cams, tmp_path / "ours.mat"), 1152, 1024)
    torch.testing.assert_close(back.K, cams.K, atol=1e-12, rtol=0)
    torch.testing.assert_close(back.w2c, cams.w2c, atol=1e-12, rtol=0)
    torch.testing.assert_close(back.dist, cams.dist, atol=1e-12, rtol=0)
    assert back.names == cams.names


# skews of the real markerless_mouse_1 DANNCE calibration (px at fx ~1650, 1152x1024)
REAL_SKEWS = (-5.89, 1.39, -0.91, -5.89, -1.27, -4.93)


def test_dannce_keeps_skew_as_the_file_has_it(tmp_path):
    """A DANNCE .mat whose K carries skew (as the real markerless_mouse_1 calibration does) loads with the skew
    kept; projection with it matches DANNCE's own (distort, then the whole K); save/load round-trips it."""
    rig = mm_rig()
    K = rig.K.clone()
    K[:, 0, 1] = torch.tensor(REAL_SKEWS[:4], dtype=torch.float64) * K[:, 0, 0] / 1650
    rig = rig.replace(K=K)
    params, raw = dannce_fixture(rig)
    assert params[1, 0]["K"][1, 0] == pytest.approx(float(K[1, 0, 1]))   # transposed layout: skew at (2,1) in MATLAB
    scipy.io.savemat(tmp_path / "s.mat", {"params": params})
    cams = calibration.load_dannce_mat(tmp_path / "s.mat", 1152, 1024)
    torch.testing.assert_close(cams.skew, K[:, 0, 1], atol=1e-12, rtol=0)
    X = arena_points()
    want = np.stack([dannce_project(p, X) for p in raw])
    np.testing.assert_allclose(calibration.project_points_opencv(cams, X).numpy(), want, atol=1e-6)
    pinhole = cams.replace(dist=None)
    np.testing.assert_allclose(pinhole.project(torch.as_tensor(X))[0].numpy(),
                               calibration.project_points_opencv(pinhole, X).numpy(), atol=1e-9)
    back = calibration.load_dannce_mat(calibration.save_dannce_mat(cams, tmp_path / "ours.mat"), 1152, 1024)
    torch.testing.assert_close(back.K, cams.K, atol=1e-12, rtol=0)
    # the other importers keep it too
    mm = calibration.load_mammal_pkl(calibration.save_mammal_pkl(cams, tmp_path / "new_cam.pkl"), 1152, 1024)
    ani = calibration.load_anipose_toml(calibration.save_anipose_toml(cams, tmp_path / "calibration.toml"))
    torch.testing.assert_close(mm.K, cams.K, atol=1e-12, rtol=0)
    torch.testing.assert_close(ani.K, cams.K, atol=1e-9, rtol=0)


def test_real_rig_dannce_calibration_with_all_six_skews_imports_and_preprocesses(tmp_path):
    """The virtual markerless_mouse_1 rig with the real calibration's six skews and lenses, written as a DANNCE
    .mat from the format's definition, loads with every skew as the file has it, becomes a rig folder's
    new_cam.pkl and loads there (load_rig, preprocess.checked_rig) without refusal."""
    from facelift_lib import preprocess, synthetic_rig as R

    real = R.markerless_mouse_rig(1.0, lens="real")
    params, raw = dannce_fixture(real)
    scipy.io.savemat(tmp_path / "markerless_mouse_1_dannce.mat",
                     {"params": params, "camnames": np.array([[f"Camera{i + 1}" for i in range(6)]], dtype=object)})
    cams = calibration.load_dannce_mat(tmp_path / "markerless_mouse_1_dannce.mat", 1152, 1024)
    assert cams.names == [f"Camera{i + 1}" for i in range(6)]
    np.testing.assert_allclose(cams.skew.numpy(), REAL_SKEWS, atol=1e-9)
    X = arena_points()
    np.testing.assert_allclose(calibration.project_points_opencv(cams, X).numpy(), np.stack([dannce_project(p, X) for p in raw]),
                               atol=1e-6)
    folder = tmp_path / "rig"
    calibration.save_mammal_pkl(cams, folder / "new_cam.pkl")
    (folder / "rig.json").write_text(json.dumps({"units": "mm", "width": 1152, "height": 1024, "frames": [0],
                                                 "camera_names": cams.names}))
    for n in cams.names:
        (folder / "images" / n).mkdir(parents=True)
    loaded = preprocess.checked_rig(folder).cams
    torch.testing.assert_close(loaded.skew, cams.skew, atol=1e-9, rtol=0)


def test_dannce_refuses_a_non_upper_triangular_k(tmp_path):
    params, _ = dannce_fixture(mm_rig())
    params[1, 0]["K"][0, 1] = 3.0   # transposed layout: K[1,0] of the camera, which no pinhole has
    scipy.io.savemat(tmp_path / "s.mat", {"params": params})
    with pytest.raises(ValueError, match="not \\[\\[fx,s,cx\\]"):
        calibration.load_dannce_mat(tmp_path / "s.mat", 1152, 1024)


REAL_LENSES = {  # (k1, k2, p1, p2, k3) of the real calibration and the radius where its radial model folds
    "Camera1": ((-0.1593, 0.9403, -0.00109, -0.00379, -2.7116), 0.672),
    "Camera2": ((-0.1511, 0.9001, -0.01099, -0.00148, -3.0223), 0.652),
    "Camera4": ((-0.1000, 0.0455, 0.0005, -0.00089, -0.9931), 0.712),
}


@pytest.mark.parametrize("name", sorted(REAL_LENSES))
def test_distortion_valid_radius_of_the_real_lenses(name):
    dist, limit = REAL_LENSES[name]
    r_max = float(calibration.distortion_valid_radius(dist))
    assert r_max == pytest.approx(limit, abs=0.001)
    k1, k2, _, _, k3 = dist
    r = np.array([0.98, 1.0, 1.02]) * r_max
    radial = r * (1 + k1 * r ** 2 + k2 * r ** 4 + k3 * r ** 6)
    assert radial[0] < radial[1] > radial[2]                           # the fold: r_d peaks there
    assert float(calibration.distortion_valid_radius([0.1, 0.01, 0.0, 0.0, 0.0])) == math.inf
    xy = np.array([[0.5 * r_max, 0.0], [0.0, 0.99 * r_max], [1.01 * r_max, 0.0]])
    assert calibration.distortion_valid(xy, np.array(dist)).tolist() == [True, True, False]


def test_undistort_normalized_inverts_inside_the_fold_and_refuses_beyond():
    dist = np.array(REAL_LENSES["Camera1"][0])
    x = np.random.default_rng(0).uniform(-0.46, 0.46, (500, 2))
    xd, _ = calibration.distort_normalized_np(x, dist)
    np.testing.assert_allclose(calibration.undistort_normalized(xd, dist), x, atol=1e-10)
    beyond = np.array([[0.0, 0.7]])                                  # r_d above the peak (0.585)
    assert np.isnan(calibration.undistort_normalized(beyond, dist)).all()


def test_anipose_toml_fixture_round_trip_and_projection(tmp_path):
    rig = mm_rig()
    K_cv = calibration._shift_pixels(rig.K, -0.5).numpy()
    R, T, D = rig.w2c[:, :3, :3].numpy(), rig.w2c[:, :3, 3].numpy(), rig.dist.numpy()
    fixture = {f"cam_{i}": {"name": rig.names[i], "size": [1152, 1024], "matrix": K_cv[i].tolist(),
                            "distortions": D[i].tolist(), "rotation": Rotation.from_matrix(R[i]).as_rotvec().tolist(),
                            "translation": T[i].tolist()} for i in range(4)}
    fixture["metadata"] = {"adjusted": False, "error": 0.42}
    with open(tmp_path / "calibration.toml", "w") as f:
        toml.dump(fixture, f)
    cams = calibration.load_anipose_toml(tmp_path / "calibration.toml")
    assert (cams.width, cams.height, cams.names) == (1152, 1024, rig.names)
    assert cams.meta["anipose_metadata"] == {"adjusted": False, "error": 0.42}
    torch.testing.assert_close(cams.K, torch.as_tensor(K_cv), atol=1e-12, rtol=0)
    torch.testing.assert_close(calibration.load_anipose_toml(tmp_path / "calibration.toml", pixel_centers="workbook").K, rig.K,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.w2c, rig.w2c, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.dist, rig.dist, atol=1e-12, rtol=0)
    X = arena_points()
    want = np.stack([opencv_model_np(K_cv[i], R[i], T[i], D[i], X) for i in range(4)])
    np.testing.assert_allclose(calibration.project_points_opencv(cams, X).numpy(), want, atol=1e-6)
    back = calibration.load_anipose_toml(calibration.save_anipose_toml(cams, tmp_path / "ours.toml"))
    torch.testing.assert_close(back.K, cams.K, atol=1e-9, rtol=0)
    torch.testing.assert_close(back.w2c, cams.w2c, atol=1e-9, rtol=0)
    assert back.names == cams.names and back.meta["anipose_metadata"]["error"] == 0.42


def test_anipose_refuses_fisheye_and_mixed_sizes(tmp_path):
    base = {"size": [640, 480], "matrix": [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]],
            "distortions": [0.0] * 4, "rotation": [0.0, 0.0, 0.0], "translation": [0.0, 0.0, 100.0]}
    with open(tmp_path / "f.toml", "w") as f:
        toml.dump({"cam_0": {**base, "name": "A", "fisheye": True}}, f)
    with pytest.raises(ValueError, match="fisheye"):
        calibration.load_anipose_toml(tmp_path / "f.toml")
    with open(tmp_path / "m.toml", "w") as f:
        toml.dump({"cam_0": {**base, "name": "A"}, "cam_1": {**base, "name": "B", "size": [800, 600]}}, f)
    with pytest.raises(ValueError, match="different image sizes"):
        calibration.load_anipose_toml(tmp_path / "m.toml")


def test_project_points_opencv_without_distortion_equals_pinhole():
    cams = mm_rig(with_dist=False)
    X = arena_points()
    torch.testing.assert_close(calibration.project_points_opencv(cams, X), cams.project(torch.as_tensor(X))[0], atol=1e-9, rtol=0)


def test_pixel_rays_of_a_skewed_camera_project_back_to_their_pixels():
    cams = mm_rig(with_dist=False)
    K = cams.K.clone()
    K[:, 0, 1] = torch.tensor(REAL_SKEWS[:4], dtype=torch.float64)
    cams = cams.replace(K=K, width=64, height=48)
    o, d = C.pixel_rays(cams, dtype=torch.float64)
    uv, _ = cams.project((o + 100.0 * d)[0].reshape(-1, 3))
    ys, xs = torch.meshgrid(torch.arange(48, dtype=torch.float64) + 0.5, torch.arange(64, dtype=torch.float64) + 0.5,
                            indexing="ij")
    torch.testing.assert_close(uv[0], torch.stack([xs, ys], -1).reshape(-1, 2), atol=1e-6, rtol=0)
