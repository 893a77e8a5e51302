"""The rig folder on disk (layout in DESIGN.md): what a real rig and the synthetic one share.

`load_rig` reads rig.json and the calibration it names once -> `Rig`; everything downstream takes that `Rig`.
`read_rig_frame` is the one frame reader (-> `RigFrame`, as OpenCV decodes: BGR uint8; `RigFrame.as_tensors()`
gives the library's form, RGB float [V,3,H,W] and bool masks). `has_ground_truth`, `load_ground_truth`,
`load_centers` read what only a synthetic rig knows; `rig_to_facelift` puts rig cameras in FaceLift units.

rig.json may name its calibration: `"calibration": {"format": "mammal" | "dannce" | "anipose", "file": ...}`
(file relative to the rig folder); without the key it is MAMMAL's new_cam.pkl (older rig folders). Every
format enters through its importer in `facelift_lib.calibration` with `pixel_centers="workbook"`: the one
place where the half pixel between OpenCV's 0-based pixels and our pixel centres at +0.5 is applied.

The procedural mouse is `facelift_lib.mouse`; the virtual rig that films it and writes a rig folder is
`facelift_lib.synthetic_rig`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facelift_lib.calibration import load_anipose_toml, load_dannce_mat, load_mammal_pkl
from facelift_lib.cameras import FACELIFT_DISTANCE, Cameras, similarity_normalize
from facelift_lib.gaussians import Gaussians, load_ply

RIG_FILE = "rig.json"
CALIBRATION_FILE = "new_cam.pkl"  # the calibration of a rig.json without a "calibration" key (MAMMAL format)
CALIBRATION_FORMATS = ("mammal", "dannce", "anipose")
IMAGE_EXTS = (".png", ".jpg")  # rig footage; masks are always PNG (lossless 0/255; 1-bit when we write them)


class RigError(ValueError):
    """A rig folder that does not read as DESIGN.md lays it out; the message names the file, the view and the fix."""


def frame_file(rig_dir: Path, kind: str, cam_name: str, frame: int, image_ext: str = ".png") -> Path:
    """rig_dir/{images|masks}/<camera>/<frame:06d>.<ext> (DESIGN.md rig layout); masks are always .png."""
    return rig_dir / kind / cam_name / f"{frame:06d}{image_ext if kind == 'images' else '.png'}"


def gt_frame_file(rig_dir: Path, frame: int) -> Path:
    """rig_dir/gt/frame_<frame:06d>.ply: a synthetic rig frame's true gaussians (rig mm)."""
    return rig_dir / "gt" / f"frame_{frame:06d}.ply"


def gt_centers_file(rig_dir: Path) -> Path:
    """rig_dir/gt/centers.json: a synthetic rig's true body centre per frame (written after every frame's PLY)."""
    return rig_dir / "gt" / "centers.json"


@dataclass
class Rig:
    """A rig folder as read back: cameras (world mm, workbook pixels), view names, frame ids, image size,
    rig.json, and which calibration file (and format) the cameras came from."""

    dir: Path
    cams: Cameras
    names: list[str]
    frames: list[int]
    width: int
    height: int
    meta: dict
    calibration_file: Path   # the file the cameras came from (rig.json "calibration", else new_cam.pkl)
    calibration_format: str  # one of CALIBRATION_FORMATS
    image_ext: str = ".png"  # of the RGB frames (rig.json "image_ext"); masks are always .png


def rig_calibration(rig_dir: str | Path, meta: dict) -> tuple[str, Path]:
    """(format, file) of a rig's calibration: rig.json's "calibration" {"format", "file"} (file relative to the
    rig folder, or absolute), or ("mammal", rig_dir/new_cam.pkl) when rig.json has no such key."""
    rig_dir = Path(rig_dir)
    if "calibration" not in meta:
        return "mammal", rig_dir / CALIBRATION_FILE
    entry, where = meta["calibration"], rig_dir / RIG_FILE
    if not isinstance(entry, dict) or "format" not in entry or "file" not in entry:
        raise RigError(f'{where}: "calibration" must be {{"format": one of {list(CALIBRATION_FORMATS)}, "file": '
                       f'"<path relative to the rig folder>"}}, got {entry!r}')
    if entry["format"] not in CALIBRATION_FORMATS:
        raise RigError(f'{where}: calibration format {entry["format"]!r} is not one of {list(CALIBRATION_FORMATS)} '
                       "(MAMMAL new_cam.pkl, DANNCE *dannce.mat, anipose calibration.toml)")
    return entry["format"], rig_dir / entry["file"]


def load_calibration(fmt: str, path: Path, width: int, height: int) -> Cameras:
    """A calibration file of format `fmt` (CALIBRATION_FORMATS) -> Cameras at width x height in workbook pixels
    (pixel centres at +0.5). MAMMAL and DANNCE files hold no image size (rig.json's is used); an anipose file
    holds one, which must be rig.json's."""
    if fmt == "mammal":
        return load_mammal_pkl(path, width=width, height=height, pixel_centers="workbook")
    if fmt == "dannce":
        return load_dannce_mat(path, width, height, pixel_centers="workbook")
    if fmt == "anipose":
        cams = load_anipose_toml(path, pixel_centers="workbook")
        if (cams.width, cams.height) != (width, height):
            raise RigError(f"{path}: the anipose calibration is for {cams.width}x{cams.height} images but rig.json says "
                           f"{width}x{height}; the calibration only holds at its own size: fix rig.json's width/height "
                           "or calibrate at the size of the frames")
        return cams
    raise RigError(f"calibration format {fmt!r} is not one of {list(CALIBRATION_FORMATS)}")


def _match_cameras(cams: Cameras, names: list[str], calib: Path, rig_json: Path) -> Cameras:
    """The calibrated cameras in rig.json's order, named as rig.json names them: by name when the calibration
    names every camera of rig.json (it may hold more), by position when it names none of them (MAMMAL's
    new_cam.pkl has no names; then the counts must agree). Anything between is an error."""
    calib_names = [str(n) for n in (cams.names or [])]
    if calib_names and set(names) <= set(calib_names) and len(set(calib_names)) == len(calib_names):
        cams = cams[[calib_names.index(n) for n in names]]
    elif len(cams) != len(names) or set(names) & set(calib_names):
        raise RigError(f"{calib}: {len(cams)} cameras named {calib_names} but {rig_json} names {len(names)}: {names}; "
                       "the calibration must name every camera of rig.json, or name none of them and list the same "
                       "cameras in the same order")
    cams.names = list(names)
    return cams


def load_rig(rig_dir: str | Path) -> Rig:
    """Read rig.json and the calibration it names (synthetic or real rig, same layout) -> Rig. Read once and
    pass the Rig down: frame readers, preprocessing and the ground truth readers take it."""
    rig_dir = Path(rig_dir)
    path = rig_dir / RIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a rig folder (or an interrupted build); build one with "
                                "facelift_lib.synthetic_rig.make_rig_dataset / ensure_rig, or lay out a real rig as in "
                                "DESIGN.md")
    with open(path) as f:
        meta = json.load(f)
    missing = [k for k in ("width", "height", "camera_names", "frames") if k not in meta]
    if missing:
        raise RigError(f"{path}: missing keys {missing} (see the rig folder layout in DESIGN.md)")
    names = [str(n) for n in meta["camera_names"]]
    width, height = int(meta["width"]), int(meta["height"])
    fmt, calib = rig_calibration(rig_dir, meta)
    cams = _match_cameras(load_calibration(fmt, calib, width, height), names, calib, path)
    image_ext = meta.get("image_ext", ".png")
    if image_ext not in IMAGE_EXTS:
        raise RigError(f"{path}: image_ext {image_ext!r} is not one of {IMAGE_EXTS}")
    return Rig(dir=rig_dir, cams=cams, names=names, frames=[int(t) for t in meta["frames"]], width=width,
               height=height, meta=meta, image_ext=image_ext, calibration_file=calib, calibration_format=fmt)


# --- one frame -----------------------------------------------------------------------------------------------
@dataclass
class RigFrame:
    """One rig frame in memory, as OpenCV decodes it: images [V] of [H,W,3] uint8 BGR, masks [V] of [H,W] uint8
    (mouse > 127), the raw cameras (rig units, optional distortion) and the file of each view (for messages
    and the JSON). `as_tensors()` gives the library's form."""

    frame: int
    images: list[np.ndarray]
    masks: list[np.ndarray]
    cams: Cameras
    image_files: list[Path]
    mask_files: list[Path]

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [V,3,H,W] float32 RGB in [0,1], masks [V,H,W] bool): DESIGN.md's image convention."""
        images = torch.from_numpy(np.stack(self.images)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
        return images, torch.from_numpy(np.stack(self.masks) > 127)


def _read_frame_file(path: Path, flags: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise RigError(f"{path}: {what} not found; every camera needs an image and a mask for every frame "
                       "(or leave the frame out with frames=[...])")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if img is None:
        raise RigError(f"{path}: {what} cannot be decoded (corrupt or truncated file?); re-export it or "
                       "leave the frame out with frames=[...]")
    return img


def read_rig_frame(rig: Rig, frame: int) -> RigFrame:
    """Images and masks of one frame of a rig (`load_rig`; layout in DESIGN.md), all its cameras.

    Errors (RigError, naming file and view): a missing or undecodable image or mask, a mask whose
    size differs from its image, an image whose size differs from the calibration's. (Empty masks are
    refused by `preprocess.preprocess_frame`, which measures them anyway.)
    """
    cams = rig.cams
    images, masks, ifiles, mfiles = [], [], [], []
    for v, name in enumerate(cams.names):
        ip = frame_file(rig.dir, "images", name, frame, rig.image_ext)
        mp = frame_file(rig.dir, "masks", name, frame)
        img = _read_frame_file(ip, cv2.IMREAD_COLOR, f"image of view {v} ({name})")
        mask = _read_frame_file(mp, cv2.IMREAD_GRAYSCALE, f"mask of view {v} ({name})")
        if mask.shape[:2] != img.shape[:2]:
            raise RigError(f"{mp}: mask of view {v} ({name}) is {mask.shape[1]}x{mask.shape[0]} but its image "
                           f"{ip.name} is {img.shape[1]}x{img.shape[0]}; masks and images must have one size")
        if (img.shape[1], img.shape[0]) != (cams.width, cams.height):
            raise RigError(f"{ip}: image of view {v} ({name}) is {img.shape[1]}x{img.shape[0]} but the "
                           f"calibration is for {cams.width}x{cams.height} (rig.json width/height); "
                           "resize it back or rescale the calibration")
        images.append(img)
        masks.append(mask)
        ifiles.append(ip)
        mfiles.append(mp)
    return RigFrame(frame=frame, images=images, masks=masks, cams=cams, image_files=ifiles, mask_files=mfiles)


# --- the ground truth of a synthetic rig ---------------------------------------------------------------------
def _folder(rig: Rig | str | Path) -> Path:
    return rig.dir if isinstance(rig, Rig) else Path(rig)


def has_ground_truth(rig: Rig | str | Path) -> bool:
    """Whether the rig knows the true mouse (a synthetic rig: gt/centers.json, written after every frame's
    gt/frame_*.ply). A real rig has no gt/: the ground-truth checks skip it and say so."""
    return gt_centers_file(_folder(rig)).is_file()


def load_ground_truth(rig: Rig | str | Path, frame: int) -> Gaussians:
    """The ground-truth gaussians of a synthetic rig frame (means [N,3] in rig mm)."""
    path = gt_frame_file(_folder(rig), frame)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: only synthetic rigs (make_rig_dataset) have ground truth")
    return load_ply(path)


def load_centers(rig: Rig | str | Path) -> torch.Tensor:
    """[F,3] ground-truth mouse body centre per frame (rig mm), from gt/centers.json."""
    path = gt_centers_file(_folder(rig))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: only synthetic rigs (make_rig_dataset) have ground truth")
    with open(path) as f:
        return torch.tensor(json.load(f)["centers_mm"], dtype=torch.float64)


def rig_to_facelift(cams: Cameras, center_mm: torch.Tensor | list[float],
                    target_distance: float = FACELIFT_DISTANCE) -> tuple[Cameras, float, torch.Tensor]:
    """Rig cameras in FaceLift units: the mouse centre at the origin, mean camera distance `target_distance`.

    World stays Z-up; one uniform scale per sample. Returns (cameras, scale, translation [3]) with
    x_facelift = scale * (x_mm + translation), the convention of `Gaussians.transformed`, so the ground
    truth follows with `g.transformed(scale, translation)`. Every point keeps its pixel coordinates.
    Image-side normalisation (crop/warp to 512²) is preprocessing's job.
    """
    out, scale, translation = similarity_normalize(cams, center_mm, target_distance)
    out.meta = {**out.meta, "units": "facelift", "camera_distance": float(target_distance),
                "rig_scale_per_mm": float(scale)}
    return out, scale, translation
