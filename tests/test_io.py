"""FaceLift sample I/O: the real reference samples, round trips, list files, and every validation check."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from facelift_lib import io
from facelift_lib.cameras import CAMERA_SPECS, Cameras, look_at_w2c, mouse_standard_6view, orbit_cameras

HUMAN = "human_sample/gslrm/sample_000"
MVDIFF = "human_sample/mvdiffusion/sample_000"


# --- helpers ----------------------------------------------------------------------------------
def disc_images(n: int, height: int, width: int, seed: int = 0, radius: float = 0.3) -> torch.Tensor:
    """[n,4,H,W] random colours inside a soft-edged disc of alpha (an object with a real mask)."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, height, width, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    r = (xs ** 2 + ys ** 2).sqrt()
    alpha = ((radius + 0.05 - r) / 0.1).clamp(0, 1)
    return torch.cat([rgb, alpha.expand(n, 1, height, width)], 1)


def small_cams(n: int = 6, size: int = 64, height: int | None = None) -> Cameras:
    """Non-standard but valid cameras: an orbit at FaceLift's distance, focal scaled to the size."""
    return orbit_cameras(torch.linspace(0, 360, n + 1)[:-1].tolist(), 20.0, fx=548.99 * size / 512,
                         width=size, height=height)


def make_sample(root: Path, cams: Cameras | None = None, name: str = "s", seed: int = 0) -> Path:
    cams = small_cams() if cams is None else cams
    return io.save_sample(root / name, disc_images(len(cams), cams.height, cams.width, seed), cams)


def edit_json(sample: Path, fn) -> None:
    path = sample / io.CAMERA_FILE
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def assert_one_problem(problems: list[str], *needles: str) -> None:
    """Exactly one problem, mentioning every needle (so each check fires alone and says where)."""
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], (needle, problems[0])


# --- single images ----------------------------------------------------------------------------
def test_read_image_channel_order_against_pillow(tmp_path):
    red = np.zeros((5, 7, 4), np.uint8)
    red[..., 0], red[..., 3] = 255, 128
    Image.fromarray(red, "RGBA").save(tmp_path / "red.png")
    img = io.read_image(tmp_path / "red.png")
    assert img.shape == (4, 5, 7) and img.dtype == torch.float32
    assert torch.allclose(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0, 128 / 255]))


def test_read_image_16bit(tmp_path):
    bgra = np.zeros((4, 4, 4), np.uint16)
    bgra[..., 0], bgra[..., 3] = 1000, 65535  # OpenCV order: 1000 is blue
    cv2.imwrite(str(tmp_path / "b16.png"), bgra)
    img = io.read_image(tmp_path / "b16.png")
    assert torch.allclose(img[:, 0, 0], torch.tensor([0.0, 0.0, 1000 / 65535, 1.0]))


def test_write_image_rgb_is_8bit_red_for_pillow_and_leaves_no_temp(tmp_path):
    img = torch.zeros(3, 6, 8)
    img[0] = 1.0
    io.write_image(tmp_path / "out.png", img)
    arr = np.asarray(Image.open(tmp_path / "out.png"))
    assert arr.dtype == np.uint8 and arr.shape == (6, 8, 3)
    assert (arr[..., 0] == 255).all() and (arr[..., 1:] == 0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_image_uint8_path_equals_float_path_and_jpeg_round_trips(tmp_path):
    rgba = torch.rand(4, 16, 20, generator=torch.Generator().manual_seed(0))
    as_u8 = (rgba * 255).round().to(torch.uint8)
    io.write_image(tmp_path / "f.png", rgba)
    io.write_image(tmp_path / "u.png", as_u8)
    assert (tmp_path / "f.png").read_bytes() == (tmp_path / "u.png").read_bytes()
    torch.testing.assert_close(io.read_image(tmp_path / "u.png"), as_u8.float() / 255)
    smooth = torch.linspace(0, 1, 20).expand(3, 16, 20).clone()
    io.write_image(tmp_path / "s.jpg", smooth)
    back = io.read_image(tmp_path / "s.jpg")
    assert back.shape == (3, 16, 20) and (back - smooth).abs().max() < 0.03  # quality 95
    with pytest.raises(ValueError, match="no alpha"):
        io.write_image(tmp_path / "a.jpg", rgba)
    with pytest.raises(ValueError, match="unsupported suffix"):
        io.write_image(tmp_path / "a.tif", rgba)


def test_write_mask_is_a_1bit_png_that_reads_back_as_0_255(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6  # odd width: the 1-bit rows end mid-byte
    as_float, as_u8 = torch.from_numpy(mask).float(), torch.from_numpy(mask.astype(np.uint8) * 255)
    for name, m in [("b.png", mask), ("f.png", as_float[None]), ("u.png", as_u8)]:
        io.write_mask(tmp_path / name, m)
        raw = (tmp_path / name).read_bytes()
        assert raw[12:16] == b"IHDR" and raw[24] == 1  # bit depth 1 (the byte after width and height)
        back = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
        assert ((back > 127) == mask).all()
        assert (io.read_image(tmp_path / name)[0] > 0.5).numpy().tolist() == mask.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "f.png", "u.png"]  # no temp left
    with pytest.raises(ValueError, match="masks are written as .png"):
        io.write_mask(tmp_path / "m.jpg", mask)
    with pytest.raises(ValueError, match=r"expected a mask \[H,W\]"):
        io.write_mask(tmp_path / "m.png", np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        io.write_mask(tmp_path / "m.png", torch.full((4, 4), float("nan")))


def test_read_image_missing_and_corrupt_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        io.read_image(tmp_path / "nope.png")
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png" * 10)
    with pytest.raises(ValueError, match="garbage.png"):
        io.read_image(bad)


# --- the real FaceLift samples ------------------------------------------------------------------
def test_load_real_16bit_human_sample(reference_dir):
    images, cams = io.load_sample(reference_dir / HUMAN, background=None)
    assert images.shape == (32, 4, 512, 512) and len(cams) == 32
    assert images.min() >= 0 and images.max() <= 1
    # 16-bit precision survives: values fall between the 8-bit levels.
    off_grid = (images * 255 - (images * 255).round()).abs()
    assert (off_grid > 1e-3).float().mean() > 0.01
    alpha = images[:, 3]
    mask_frac = (alpha > 0.5).flatten(1).float().mean(1)
    assert (mask_frac > 0.01).all() and (mask_frac < 0.99).all()
    assert torch.allclose(cams.centers.norm(dim=-1), torch.full((32,), 2.7, dtype=torch.float64), atol=1e-4)


def test_load_real_sample_background_and_views(reference_dir):
    raw, _ = io.load_sample(reference_dir / HUMAN, background=None, views=[3, 0])
    white, cams = io.load_sample(reference_dir / HUMAN, background="white", views=[3, 0])
    black, _ = io.load_sample(reference_dir / HUMAN, background="black", views=[3, 0])
    assert white.shape == (2, 4, 512, 512)
    assert cams.frame_extras[0]["file_path"] == "images/cam_003.png"
    alpha = raw[:, 3:4]
    assert torch.equal(white[:, 3], raw[:, 3])
    assert torch.allclose(white[:, :3], raw[:, :3] * alpha + (1 - alpha), atol=1e-6)
    assert torch.allclose(black[:, :3], raw[:, :3] * alpha, atol=1e-6)
    outside = (alpha == 0).expand_as(white[:, :3])
    assert (white[:, :3][outside] == 1).all() and (black[:, :3][outside] == 0).all()
    with pytest.raises(IndexError, match="32 views"):
        io.load_sample(reference_dir / HUMAN, views=[32])
    with pytest.raises(ValueError, match="background"):
        io.load_sample(reference_dir / HUMAN, background="grey")


def test_real_human_sample_validates(reference_dir):
    assert io.validate_sample(reference_dir / HUMAN, expected_views=32) == []


def test_mvdiffusion_sample_has_no_cameras(reference_dir):
    with pytest.raises(FileNotFoundError, match="opencv_cameras.json"):
        io.load_sample(reference_dir / MVDIFF)
    problems = io.validate_sample(reference_dir / MVDIFF)
    assert any("opencv_cameras.json" in p for p in problems)


# --- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    cams = small_cams(n=4, size=48)
    cams.meta = {"camera_type_note": "kept", "camera_distance": 2.7}
    images = disc_images(4, 48, 48, seed=3)
    sample = io.save_sample(tmp_path / "rt", images, cams, sample_id="mouse_0007")
    loaded, cams2 = io.load_sample(sample, background=None)
    assert (loaded - images).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation
    assert torch.equal(cams2.K, cams.K) and torch.equal(cams2.w2c, cams.w2c)
    data = json.loads((sample / io.CAMERA_FILE).read_text())
    assert data["id"] == "mouse_0007" and data["camera_distance"] == 2.7 and data["camera_type_note"] == "kept"
    assert [f["file_path"] for f in data["frames"]] == [f"images/cam_{i:03d}.png" for i in range(4)]
    assert io.validate_sample(sample, expected_views=4) == []


def test_save_sample_overwrite_removes_stale_views(tmp_path):
    sample = make_sample(tmp_path, small_cams(n=6))
    make_sample(tmp_path, small_cams(n=3))
    assert sorted(p.name for p in (sample / "images").iterdir()) == ["cam_000.png", "cam_001.png", "cam_002.png"]
    assert io.validate_sample(sample) == []


def test_save_sample_rejects_disagreeing_inputs(tmp_path):
    cams = small_cams(n=2, size=32)
    with pytest.raises(ValueError, match="3 images but 2 cameras"):
        io.save_sample(tmp_path / "a", disc_images(3, 32, 32), cams)
    with pytest.raises(ValueError, match="40x40"):
        io.save_sample(tmp_path / "b", disc_images(2, 40, 40), cams)
    assert not (tmp_path / "a" / io.CAMERA_FILE).exists()


def test_load_sample_size_mismatch_names_file_and_view(tmp_path):
    sample = make_sample(tmp_path)
    io.write_image(sample / "images/cam_004.png", disc_images(1, 32, 32)[0])
    with pytest.raises(ValueError, match=r"cam_004\.png \(view 4\).*32x32.*64x64"):
        io.load_sample(sample)
    problems = io.validate_sample(sample)
    assert any("cam_004.png (view 4)" in p and "64x64" in p for p in problems)


def test_load_sample_corrupt_png_names_file(tmp_path):
    sample = make_sample(tmp_path)
    (sample / "images/cam_002.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cam_002.png"):
        io.load_sample(sample)
    assert_one_problem(io.validate_sample(sample), "cam_002.png (view 2)", "unreadable")


# --- list files -------------------------------------------------------------------------------
def test_list_file_relative_round_trip(tmp_path):
    a, b = make_sample(tmp_path / "data", name="a"), make_sample(tmp_path / "data", name="b")
    lst = io.write_list_file(tmp_path / "lists" / "train.txt", [a, b])
    assert lst.read_text().splitlines() == ["../data/a", "../data/b"]
    lst.write_text("# my split\n\n../data/a\n  ../data/b  \n")
    assert io.read_list_file(lst) == [a.absolute(), b.absolute()]
    report = io.validate_dataset(lst)
    assert report == {str(a.absolute()): [], str(b.absolute()): []}


def test_list_file_missing_relative_entry(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# header\nmissing_sample\n")
    with pytest.raises(FileNotFoundError, match=r"list\.txt:2: missing_sample"):
        io.read_list_file(lst)


@pytest.mark.parametrize("name", ["gslrm/data_gslrm_train.txt", "gslrm/data_gslrm_val.txt",
                                  "mvdiffusion/data_mvdiff_train.txt"])
def test_shipped_absolute_lists_are_rejected(reference_dir, name):
    lst = reference_dir / "human_sample" / name
    with pytest.raises(FileNotFoundError) as err:
        io.read_list_file(lst)
    msg = str(err.value)
    assert f"{lst}:1: /mnt/localssd/FaceLift/data_sample/" in msg
    assert "relative" in msg


# --- validate_sample: each check fires on its own ---------------------------------------------
def test_valid_standard_sample_passes(tmp_path):
    sample = make_sample(tmp_path, mouse_standard_6view())
    assert io.validate_sample(sample, expected_views=6, raise_on_error=True) == []


def test_wrong_view_count(tmp_path):
    sample = make_sample(tmp_path)
    assert_one_problem(io.validate_sample(sample, expected_views=8), "6 views, expected 8")


def test_unreferenced_and_missing_images(tmp_path):
    sample = make_sample(tmp_path)
    io.write_image(sample / "images/cam_006.png", disc_images(1, 64, 64)[0])
    assert_one_problem(io.validate_sample(sample), "cam_006.png", "not referenced")
    (sample / "images/cam_006.png").unlink()
    (sample / "images/cam_001.png").unlink()
    assert_one_problem(io.validate_sample(sample), "cam_001.png (view 1)", "missing")


def test_non_square(tmp_path):
    sample = make_sample(tmp_path, small_cams(size=64, height=48))
    assert_one_problem(io.validate_sample(sample), "64x48", "not square")


def test_unequal_sizes(tmp_path):
    sample = make_sample(tmp_path)
    io.write_image(sample / "images/cam_005.png", disc_images(1, 32, 32)[0])
    problems = io.validate_sample(sample)
    assert len(problems) == 2, problems
    assert any("different sizes" in p for p in problems)
    assert any("cam_005.png (view 5)" in p and "opencv_cameras.json says 64x64" in p for p in problems)


def test_missing_alpha(tmp_path):
    sample = make_sample(tmp_path)
    io.write_image(sample / "images/cam_003.png", disc_images(1, 64, 64)[0, :3])
    assert_one_problem(io.validate_sample(sample), "cam_003.png (view 3)", "no alpha")
    with pytest.raises(ValueError, match=r"cam_003\.png \(view 3\).*no alpha"):
        io.load_sample(sample)


@pytest.mark.parametrize("value,view,message", [(0.0, 1, "alpha is empty"), (1.0, 0, "fully opaque")])
def test_degenerate_alpha(tmp_path, value, view, message):
    sample = make_sample(tmp_path)
    img = disc_images(1, 64, 64)[0]
    img[3] = value
    io.write_image(sample / f"images/cam_{view:03d}.png", img)
    assert_one_problem(io.validate_sample(sample), f"cam_{view:03d}.png (view {view})", message)


def test_principal_point_outside(tmp_path):
    sample = make_sample(tmp_path)
    edit_json(sample, lambda d: d["frames"][2].update(cx=100.0))
    assert_one_problem(io.validate_sample(sample), "frame 2", "principal point (100, 32) lies outside")


def test_nan_in_w2c(tmp_path):
    sample = make_sample(tmp_path)
    edit_json(sample, lambda d: d["frames"][4]["w2c"][1].__setitem__(3, float("nan")))
    assert_one_problem(io.validate_sample(sample), "frame 4", "NaN")


def test_all_cameras_nan_still_reports(tmp_path):
    sample = make_sample(tmp_path)
    edit_json(sample, lambda d: [f["w2c"][0].__setitem__(0, float("nan")) for f in d["frames"]])
    assert_one_problem(io.validate_sample(sample), "frames 0, 1, 2, 3, 4, 5", "NaN")


def test_non_orthonormal_rotation(tmp_path):
    sample = make_sample(tmp_path)

    def scale_rotation(d):
        d["frames"][1]["w2c"] = [[x * 1.05 for x in row[:3]] + row[3:] for row in d["frames"][1]["w2c"][:3]] \
            + [d["frames"][1]["w2c"][3]]
    edit_json(sample, scale_rotation)
    assert_one_problem(io.validate_sample(sample), "frame 1", "not a rotation")


def test_reflection_is_not_a_rotation(tmp_path):
    sample = make_sample(tmp_path)
    edit_json(sample, lambda d: d["frames"][0]["w2c"].__setitem__(0, [-x for x in d["frames"][0]["w2c"][0]]))
    assert_one_problem(io.validate_sample(sample), "frame 0", "det = -1")


def test_claimed_standard_type_with_raw_rig_cameras(tmp_path):
    """The bug this module exists for: rig cameras copied into a sample that claims the standard spec."""
    spec = CAMERA_SPECS["mouse_standard_6view"]
    raw = orbit_cameras([0, 60, 120, 180, 240, 300], 20.0, distance=300.0, fx=1650.0, width=512)
    raw.meta = {"camera_type": "mouse_standard_6view", "camera_distance": spec["distance"]}
    sample = make_sample(tmp_path, raw)
    problems = io.validate_sample(sample)
    text = "\n".join(problems)
    assert "fx=1650" in text and "fy=1650" in text
    assert "camera is 300 from the origin but camera_type 'mouse_standard_6view' puts cameras at 2.7" in text
    assert "frames 0, 1, 2, 3, 4, 5" in text
    with pytest.raises(io.SampleValidationError) as err:
        io.validate_sample(sample, raise_on_error=True)
    assert isinstance(err.value, ValueError) and err.value.problems == problems
    assert str(sample) in str(err.value)


def test_claimed_standard_type_wrong_view_count_and_size(tmp_path):
    cams = small_cams(n=4, size=64)
    cams.meta = {"camera_type": "mouse_standard_6view"}
    text = "\n".join(io.validate_sample(make_sample(tmp_path, cams)))
    assert "4 views but camera_type 'mouse_standard_6view' has 6" in text
    # a non-square image cannot be the square spec at any resolution
    cams = small_cams(n=6, size=64, height=48)
    cams.meta = {"camera_type": "mouse_standard_6view"}
    text = "\n".join(io.validate_sample(make_sample(tmp_path, cams, name="wide")))
    assert "image size 64x48 does not have the aspect of camera_type 'mouse_standard_6view' (512x512)" in text


def test_claimed_standard_type_is_size_aware(tmp_path):
    """The spec at 64² is the 512² cameras with intrinsics scaled by 64/512; anything else is flagged."""
    ok = small_cams(n=6, size=64)
    ok.K = ok.K.clone()
    ok.w2c = mouse_standard_6view().w2c
    ok.meta = {"camera_type": "mouse_standard_6view", "camera_distance": 2.7}
    assert io.validate_sample(make_sample(tmp_path, ok, name="ok")) == []
    bad = ok.replace(K=ok.K.clone())
    bad.K[:, 0, 0] = 548.99   # the 512² focal length left on a 64² image
    text = "\n".join(io.validate_sample(make_sample(tmp_path, bad, name="bad")))
    assert "fx=549" in text or "fx=548.99" in text


def test_standard_type_camera_not_looking_at_origin(tmp_path):
    cams = mouse_standard_6view()
    # frame 2 stays 2.7 from the origin but aims 0.5 above it
    cams.w2c[2] = look_at_w2c(cams.centers[2:3], target=(0.0, 0.0, 0.5))[0]
    assert_one_problem(io.validate_sample(make_sample(tmp_path, cams)), "frame 2", "does not look at the origin")


def test_unknown_camera_type(tmp_path):
    cams = small_cams()
    cams.meta = {"camera_type": "mouse_wide"}
    assert_one_problem(io.validate_sample(make_sample(tmp_path, cams)), "unknown camera_type 'mouse_wide'")


def test_validate_dataset_raises_once_for_all_bad_samples(tmp_path):
    good = make_sample(tmp_path, name="good")
    bad = make_sample(tmp_path, name="bad")
    edit_json(bad, lambda d: d["frames"][0].update(cy=-5.0))
    report = io.validate_dataset([good, bad])
    assert report[str(good)] == [] and len(report[str(bad)]) == 1
    with pytest.raises(io.SampleValidationError, match="1 of 2 samples"):
        io.validate_dataset([good, bad], raise_on_error=True)


def test_save_torch_atomic_bytes_depend_only_on_the_object(tmp_path):
    # Shipped weights are compared by sha256: the same weights saved to two places must be the same bytes
    # (torch.save to a path names the zip archive after the random temp file it writes first).
    weights = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "model_config": {"d": 3}}
    a = io.save_torch_atomic(weights, tmp_path / "a" / "w.pt")
    b = io.save_torch_atomic(weights, tmp_path / "b" / "w.pt")
    assert a.read_bytes() == b.read_bytes()
    assert torch.equal(torch.load(a, weights_only=True)["model"]["w"], weights["model"]["w"])
    assert not list(tmp_path.rglob(".*tmp"))  # no temp file left
