"""FaceLift sample folders: images, cameras, list files, and the check that they agree.

A sample is a folder::

    sample_dir/
      images/cam_000.png ...   RGBA PNG (8- or 16-bit), the object mask in alpha
      opencv_cameras.json      {"id", "frames": [{w, h, fx, fy, cx, cy, w2c, file_path?}, ...]}

OpenCV cameras, world Z-up (see cameras.py). Images and cameras must always agree: GS-LRM fed
images whose cameras are wrong does not fail, it predicts white, so `load_sample` refuses any
size mismatch and `validate_sample` checks everything else before a dataset is used.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facelift_lib.cameras import CAMERA_SPECS, Cameras
from facelift_lib.images import SAMPLE_BACKGROUNDS, composite
from facelift_lib.locks import atomic_write_bytes, os_error_hint, pid_alive

CAMERA_FILE = "opencv_cameras.json"
_CAM_PNG = re.compile(r"cam_(\d+)\.png$")


class SampleValidationError(ValueError):
    """A sample failed `validate_sample`; `.problems` lists every problem found."""

    def __init__(self, where: str | Path, problems: list[str]) -> None:
        self.where, self.problems = str(where), list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in FaceLift sample(s):\n{lines}")


# --- single images ----------------------------------------------------------------------------
def read_image(path: str | Path) -> torch.Tensor:
    """PNG (8- or 16-bit; gray, RGB or RGBA) or JPEG -> float32 [C,H,W] in [0,1], channels in RGB(A) order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    # imdecode of the raw bytes rather than imread: a missing file and an undecodable one give
    # different errors, and non-ASCII paths work everywhere.
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: cannot be decoded as an image (corrupt or truncated file?); re-export it")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ValueError(f"{path}: unsupported pixel type {img.dtype}; expected an 8- or 16-bit PNG")
    if img.ndim == 2:
        img = img[..., None]
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return torch.from_numpy(img.astype(np.float32) / scale).permute(2, 0, 1).contiguous()


def save_torch_atomic(obj: object, path: str | Path, what: str = "checkpoint") -> Path:
    """torch.save `obj` to a unique temp file beside `path`, then rename it over `path`.

    A crash or a full disk leaves the previous file (and every other checkpoint) whole and no temp file; the
    error is an OSError naming `what`, the file, the free space and what to do (torch's own message for a
    full disk is `enforce fail at inline_container.cc`, which names nothing). The bytes depend only on `obj`:
    torch.save to a path names the zip archive after that (random) temp path, to a file object "archive", so
    the same weights saved twice have the same sha256 (shipped weights are compared by it).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**30:.2f} GiB free"
        except OSError:
            free = "free space unknown"
        code = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
        hint = os_error_hint(e) if isinstance(e, OSError) and e.errno else (
            "a full disk is the usual cause: free space (or point the run elsewhere) and resume")
        raise OSError(code, f"cannot write {what} {path} ({free}): {type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}; earlier checkpoints are unchanged; {hint}") from e
    return path


JPEG_QUALITY = 95  # rig footage only (FaceLift samples are always PNG: alpha, lossless)
# Fast lossless PNG: zlib level 1 with the SUB row filter encodes a 512² RGBA view in ~2.4 ms instead of
# ~7 ms (OpenCV's adaptive filters at level 3), and the files come out smaller (benchmarks/bench_preprocess.py).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1] + (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])


def write_image(path: str | Path, img: torch.Tensor | np.ndarray) -> Path:
    """Write img [C,H,W] (C = 1 gray, 3 RGB, 4 RGBA) atomically, as PNG or, by suffix, JPEG (no alpha).

    Float images in [0,1] are clipped before rounding to 8 bits (float noise just outside the range is
    normal; NaN/inf is an error); uint8 images are written as they are (the fast path).
    """
    path = Path(path)
    img = torch.as_tensor(img).detach().cpu()
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise ValueError(f"write_image({path}): expected [C,H,W] with C in (1,3,4), got {tuple(img.shape)}")
    if img.dtype != torch.uint8:
        if not torch.isfinite(img).all():
            raise ValueError(f"write_image({path}): image has NaN/inf values")
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = img.permute(1, 2, 0).numpy()
    if arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if arr.shape[2] == 4:
            raise ValueError(f"write_image({path}): JPEG has no alpha channel; write RGBA as .png")
        ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    elif suffix == ".png":
        ok, buf = cv2.imencode(".png", arr, PNG_PARAMS)
    else:
        raise ValueError(f"write_image({path}): unsupported suffix {path.suffix!r}; use .png or .jpg")
    if not ok:
        raise RuntimeError(f"write_image({path}): OpenCV could not encode the image")
    atomic_write_bytes(path, buf.tobytes())
    return path


def write_mask(path: str | Path, mask: torch.Tensor | np.ndarray) -> Path:
    """Write a binary mask [H,W] (bool, or numbers: mouse > 0.5 for floats, > 127 for uint8) atomically as a
    1-bit PNG.

    Why 1 bit: decoding is what bounds preprocessing speed, and a 1152x1024 mask decodes ~3x faster as a
    1-bit PNG than as an 8-bit one (~2 ms against ~5 ms: benchmarks/bench_preprocess.py, BENCHMARKS.md).
    Readers see 0/255 uint8 either way (OpenCV expands the bit depth), so nothing downstream changes.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_mask({path}): masks are written as .png (lossless), not {path.suffix!r}")
    m = torch.as_tensor(mask).detach().cpu()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"write_mask({path}): expected a mask [H,W], got {tuple(m.shape)}")
    if m.dtype == torch.bool:
        on = m
    elif m.dtype == torch.uint8:
        on = m > 127
    else:
        if not torch.isfinite(m).all():
            raise ValueError(f"write_mask({path}): mask has NaN/inf values")
        on = m > 0.5
    arr = on.numpy().astype(np.uint8) * 255
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise RuntimeError(f"write_mask({path}): OpenCV could not encode the mask")
    atomic_write_bytes(path, buf.tobytes())
    return path


# --- samples ----------------------------------------------------------------------------------
def image_paths(sample_dir: str | Path, cams: Cameras) -> list[Path]:
    """Image file of each view: frames[i]["file_path"] when present, else images/cam_{i:03d}.png."""
    sample_dir = Path(sample_dir)
    extras = cams.frame_extras or [{}] * len(cams)
    return [sample_dir / ex["file_path"] if "file_path" in ex else sample_dir / "images" / f"cam_{i:03d}.png"
            for i, ex in enumerate(extras)]


def _load_cameras(sample_dir: Path) -> Cameras:
    if not sample_dir.is_dir():
        raise FileNotFoundError(f"sample folder not found: {sample_dir}")
    cam_file = sample_dir / CAMERA_FILE
    if not cam_file.is_file():
        hint = ""
        if any(sample_dir.glob("cam_*.png")):
            hint = (" This folder has cam_*.png at its top level, like a FaceLift multi-view diffusion sample, "
                    "which has no cameras: those views use the standard cameras (cameras.facelift_standard()).")
        raise FileNotFoundError(f"{cam_file}: camera file missing; a FaceLift GS-LRM sample needs "
                                f"{CAMERA_FILE} next to images/.{hint}")
    try:
        data = json.loads(cam_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{cam_file}: not valid JSON ({e}); the file is truncated or corrupt (an interrupted "
                         "copy or write?): re-create the sample (re-run the notebook that wrote it)") from e
    if not isinstance(data, dict):
        raise ValueError(f"{cam_file}: expected a JSON object {{'frames': [...]}}, got {type(data).__name__}")
    for i, fr in enumerate(data.get("frames") or []):
        shape = _matrix_shape(fr.get("w2c")) if isinstance(fr, dict) else None
        if isinstance(fr, dict) and "w2c" in fr and shape != (4, 4):
            fix = " (append the row [0, 0, 0, 1])" if shape == (3, 4) else ""
            raise ValueError(f"{cam_file}: frame {i}: w2c is {'x'.join(map(str, shape)) if shape else 'not a matrix'}"
                             f"; FaceLift cameras need a 4x4 world-to-camera matrix [[R, t], [0, 0, 0, 1]]{fix}")
    return Cameras.from_dict(data, source=str(cam_file))


def _matrix_shape(m: object) -> tuple[int, int] | None:
    """(rows, cols) of a JSON matrix (list of equal-length lists of numbers), else None."""
    if not isinstance(m, list) or not m or not all(isinstance(r, list) for r in m):
        return None
    cols = {len(r) for r in m}
    return (len(m), cols.pop()) if len(cols) == 1 else None


def check_rigid(cams: Cameras, source: str | Path, atol: float = 1e-4) -> None:
    """Raise ValueError naming `source` and the frames whose K/w2c are not finite or whose w2c is not rigid
    ([[R, t], [0, 0, 0, 1]] with R orthonormal, det +1, within `atol`)."""
    bad: list[str] = []
    finite = torch.isfinite(cams.K).flatten(1).all(1) & torch.isfinite(cams.w2c).flatten(1).all(1)
    eye = torch.eye(3, dtype=cams.w2c.dtype)
    for v in range(len(cams)):
        if not finite[v]:
            bad.append(f"frame {v}: K or w2c holds NaN/inf")
            continue
        w2c = cams.w2c[v]
        R = w2c[:3, :3]
        err = max(float((R @ R.T - eye).abs().max()), abs(float(torch.linalg.det(R)) - 1),
                  float((w2c[3] - torch.tensor([0, 0, 0, 1], dtype=w2c.dtype)).abs().max()))
        if err > atol:
            bad.append(f"frame {v}: w2c is not rigid (off by {err:.2e}; need [[R, t], [0, 0, 0, 1]], R a rotation)")
    if bad:
        raise ValueError(f"{source}: {'; '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}; fix the cameras "
                         "(io.validate_sample lists every problem) and re-save the sample")


def load_sample(sample_dir: str | Path, background: str | None = "white",
                views: Sequence[int] | None = None) -> tuple[torch.Tensor, Cameras]:
    """Read a FaceLift sample -> (images [V,4,H,W] float32 in [0,1], Cameras).

    Channel 3 is always the alpha (mask). RGB is composited over `background` ("white" or "black",
    `images.SAMPLE_BACKGROUNDS`: straight-alpha rgb*a + bg*(1-a), `images.composite`) or left exactly as
    stored (None).
    `views` picks and orders a subset of the views (indices into the JSON frames).
    Every image must be RGBA and exactly the size its camera says; anything else is an error
    naming the file and the view.
    """
    if background is not None and background not in SAMPLE_BACKGROUNDS:
        raise ValueError(f"load_sample: background must be one of {SAMPLE_BACKGROUNDS} or None, got {background!r}")
    sample_dir = Path(sample_dir)
    cams = _load_cameras(sample_dir)
    check_rigid(cams, sample_dir / CAMERA_FILE)
    paths = image_paths(sample_dir, cams)
    ids = list(range(len(cams))) if views is None else [int(v) for v in views]
    bad = [v for v in ids if not 0 <= v < len(cams)]
    if not ids or bad:
        raise IndexError(f"{sample_dir}: views {bad} requested but {CAMERA_FILE} has {len(cams)} views")
    cams = cams[ids]
    images = []
    for v in ids:
        img = read_image(paths[v])
        C, H, W = img.shape
        if C != 4:
            raise ValueError(f"{paths[v]} (view {v}): {C} channel(s), no alpha; FaceLift samples are RGBA with "
                             "the object mask in alpha (write them with io.save_sample)")
        if (W, H) != (cams.width, cams.height):
            raise ValueError(f"{paths[v]} (view {v}): image is {W}x{H} but {CAMERA_FILE} says "
                             f"{cams.width}x{cams.height}; images and cameras must agree (resize the image or "
                             "rescale the intrinsics, then re-save the sample)")
        images.append(img)
    out = torch.stack(images)
    if background is not None:
        out[:, :3] = composite(out, background)
    return out, cams


def save_sample(sample_dir: str | Path, images: torch.Tensor, cams: Cameras,
                sample_id: str | None = None) -> Path:
    """Write images [V,4,H,W] (float in [0,1], or uint8) as images/cam_XXX.png (8-bit RGBA) plus
    opencv_cameras.json.

    The JSON keeps `cams.meta` (camera_type, camera_distance, ...) and per-frame extras, sets
    "id" (`sample_id`, default the folder name) and a `file_path` for every frame. Cameras must be
    finite and rigid (NaN would be written as a bare `NaN` token other tools cannot parse).

    Atomic: the sample is written whole into a hidden folder beside `sample_dir`, then swapped in
    (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames). A failure (disk full, a crash) leaves
    the previous sample whole and the error names the file; files in the folder that save_sample does
    not manage are carried over; images/cam_NNN.png of an earlier save with NNN >= V are dropped.
    Returns the sample folder.
    """
    sample_dir = Path(sample_dir)
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 4:
        raise ValueError(f"save_sample({sample_dir}): images must be [V,4,H,W] (RGBA), got {tuple(images.shape)}")
    V, _, H, W = images.shape
    if V != len(cams):
        raise ValueError(f"save_sample({sample_dir}): {V} images but {len(cams)} cameras")
    if (W, H) != (cams.width, cams.height):
        raise ValueError(f"save_sample({sample_dir}): images are {W}x{H} but cameras say {cams.width}x{cams.height}")
    check_rigid(cams, f"save_sample({sample_dir})")
    rel = [f"images/cam_{i:03d}.png" for i in range(V)]
    extras = cams.frame_extras or [{} for _ in range(V)]
    meta = {k: v for k, v in cams.meta.items() if k != "id"}
    out = cams.replace(meta={"id": sample_id or sample_dir.name, **meta},
                       frame_extras=[{**ex, "file_path": p} for ex, p in zip(extras, rel)])
    try:
        cam_json = json.dumps(out.to_dict(), indent=1, allow_nan=False).encode()
    except ValueError as e:  # NaN/inf somewhere in meta or frame extras
        raise ValueError(f"save_sample({sample_dir}): {CAMERA_FILE} would hold NaN/inf ({e}); JSON has no such "
                         "numbers: fix the value (meta or per-frame extras) before saving") from e
    parent = sample_dir.parent
    _remove_dead_temps(parent, sample_dir.name)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = _hidden_dir(parent, sample_dir.name, "saving")
    except OSError as e:
        raise type(e)(e.errno, f"save_sample({sample_dir}): cannot write in {parent}: {e.strerror or e}") from e
    try:
        for i in range(V):
            write_image(staging / rel[i], images[i])
        atomic_write_bytes(staging / CAMERA_FILE, cam_json)
        if sample_dir.is_dir():
            _carry_unmanaged(sample_dir, staging)
        _swap_in(staging, sample_dir)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise type(e)(e.errno, f"save_sample({sample_dir}): {e.strerror or e}; the previous sample there (if "
                               "any) is unchanged") from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sample_dir


def _carry_unmanaged(old: Path, new: Path) -> None:
    """Copy files save_sample does not write (anything but opencv_cameras.json and images/cam_NNN.png) from the
    old sample folder into the new one, so replacing a sample keeps what others stored beside it (copies: the
    old sample stays whole until the swap)."""
    for entry in old.iterdir():
        if entry.name == CAMERA_FILE:
            continue
        if entry.name == "images" and entry.is_dir():
            for img in entry.iterdir():
                if not _CAM_PNG.fullmatch(img.name) and not (new / "images" / img.name).exists():
                    _copy_entry(img, new / "images" / img.name)
            continue
        if not (new / entry.name).exists():
            _copy_entry(entry, new / entry.name)


def _copy_entry(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel / file system without it
        return False
    raise OSError(err, f"cannot swap {a} into {b}: {os.strerror(err)}")


def _swap_in(staging: Path, sample_dir: Path) -> None:
    """Put the finished `staging` folder at `sample_dir`; the old sample (if any) is removed afterwards."""
    if not sample_dir.exists():
        os.rename(staging, sample_dir)
        return
    if _rename_exchange(staging, sample_dir):
        shutil.rmtree(staging)  # now holds the old sample
        return
    old = _hidden_dir(sample_dir.parent, sample_dir.name, "old")
    os.replace(sample_dir, old / "sample")  # the window without a sample is these two renames
    os.rename(staging, sample_dir)
    shutil.rmtree(old)


def _hidden_dir(parent: Path, name: str, kind: str) -> Path:
    """A new folder .<name>.<kind>-<pid>-<random> in parent (mode from the umask, unlike mkdtemp's 0700)."""
    path = parent / f".{name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def _remove_dead_temps(parent: Path, name: str) -> None:
    """Hidden .<name>.saving-<pid>-* / .<name>.old-<pid>-* folders left by a save whose process died."""
    if not parent.is_dir():
        return
    for tmp in parent.glob(f".{glob.escape(name)}.*-*-*"):
        m = re.fullmatch(rf"\.{re.escape(name)}\.(saving|old)-(\d+)-\w+", tmp.name)
        if m and tmp.is_dir() and not pid_alive(int(m.group(2))):
            shutil.rmtree(tmp, ignore_errors=True)


# --- parameters ------------------------------------------------------------------------------
def check_number_fields(params: object) -> None:
    """Refuse a dataclass (TrainParams, TrainConfig) whose number/bool fields hold another type, e.g. max_steps="40"
    from a YAML profile, which would fail much later with a message naming nothing. Fields are judged by their
    default's type (int: int; float: int or float; bool: bool); None passes where the annotation allows it."""
    import dataclasses

    problems = []
    for f in dataclasses.fields(params):
        default, value = f.default, getattr(params, f.name)
        if default is dataclasses.MISSING or isinstance(default, str) or default is None:
            continue
        if value is None and "None" in str(f.type):
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            problems.append(f"{f.name}={value!r} ({type(value).__name__}), expected {type(default).__name__} "
                            f"like the default {default!r}")
    if problems:
        raise ValueError(f"{type(params).__name__}: {'; '.join(problems)} (a number in quotes in the YAML? "
                         "write it without quotes)")


# --- list files -------------------------------------------------------------------------------
def read_list_file(path: str | Path) -> list[Path]:
    """Sample folders listed one per line; blank lines and lines starting with # are skipped.

    Relative paths resolve against the list file's folder. A listed folder that does not exist is
    an error naming the list file, line and path (FaceLift ships lists with absolute paths from
    another machine; rewrite them relative with `write_list_file`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    base = path.parent
    dirs, missing = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry)
        resolved = Path(os.path.normpath(p if p.is_absolute() else base.absolute() / p))
        if not resolved.is_dir():
            missing.append((lineno, entry, p.is_absolute()))
        dirs.append(resolved)
    if missing:
        shown = "\n".join(f"  {path}:{n}: {e}" + (" (absolute path)" if a else f" (relative to {base})")
                          for n, e, a in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        fix = ("absolute paths from another machine: rewrite the list with paths relative to its folder "
               "(io.write_list_file does this)") if any(a for *_, a in missing) else "fix or remove these lines"
        raise FileNotFoundError(f"{path}: {len(missing)} listed sample folder(s) do not exist:\n{shown}{more}\n"
                                f"Fix: {fix}.")
    if not dirs:
        raise ValueError(f"{path}: lists no sample folders")
    return dirs


def write_list_file(path: str | Path, sample_dirs: Iterable[str | Path]) -> Path:
    """Write sample folders one per line, relative to the list file's folder (so the tree can move)."""
    path = Path(path)
    base = path.parent.absolute()
    lines = [Path(os.path.relpath(Path(d).absolute(), base)).as_posix() for d in sample_dirs]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


# --- validation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationTolerances:
    """What `validate_sample` accepts as equal."""

    rotation_atol: float = 1e-4     # max |R R^T - I| entry, and |det R - 1|
    focal_rtol: float = 1e-3        # fx, fy vs a standard spec (548.99 vs 548.9937 passes)
    principal_atol_px: float = 0.5  # cx, cy vs a standard spec
    distance_rtol: float = 1e-3     # camera-to-origin distance vs spec / camera_distance
    look_at_rtol: float = 1e-2      # optical axis miss of the origin, as a fraction of the distance
    opaque_level: float = 1.0       # alpha >= this everywhere means no mask was written
    mask_level: float = 0.5         # mask = alpha > this (DESIGN.md)


def _camera_problems(cams: Cameras, tol: ValidationTolerances) -> list[str]:
    """Problems with the cameras alone: finite values, rigid w2c, principal point, claimed spec."""
    whole: list[str] = []                  # problems of the file as a whole
    per_frame: list[tuple[int, str]] = []  # (frame, problem); identical ones are merged below
    W, H = cams.width, cams.height
    finite_K = torch.isfinite(cams.K).all(dim=(1, 2))
    finite_w = torch.isfinite(cams.w2c).all(dim=(1, 2))
    eye = torch.eye(3, dtype=torch.float64)
    rigid = []
    for v in range(len(cams)):
        if not finite_K[v]:
            per_frame.append((v, "intrinsics contain NaN/inf"))
        else:
            fx, fy, cx, cy = (float(t[v]) for t in (cams.fx, cams.fy, cams.cx, cams.cy))
            if fx <= 0 or fy <= 0:
                per_frame.append((v, f"focal lengths must be positive, got fx={fx:g}, fy={fy:g}"))
            if not (0 <= cx <= W and 0 <= cy <= H):
                per_frame.append((v, f"principal point ({cx:g}, {cy:g}) lies outside the {W}x{H} image "
                                     "(intrinsics not rescaled with a crop/resize?)"))
        if not finite_w[v]:
            per_frame.append((v, "w2c contains NaN/inf"))
            continue
        w2c = cams.w2c[v]
        if (w2c[3] - torch.tensor([0, 0, 0, 1], dtype=torch.float64)).abs().max() > 1e-9:
            per_frame.append((v, f"w2c last row is {w2c[3].tolist()}, expected [0, 0, 0, 1]"))
        R = w2c[:3, :3]
        ortho_err = float((R @ R.T - eye).abs().max())
        det = float(torch.linalg.det(R))
        if ortho_err > tol.rotation_atol or abs(det - 1) > tol.rotation_atol:
            per_frame.append((v, f"w2c rotation is not a rotation (max |R R^T - I| = {ortho_err:.2e}, "
                                 f"det = {det:.4f}; need orthonormal with det +1)"))
        else:
            rigid.append(v)

    # Distances and look-at only mean something for rigid, finite cameras.
    good = cams[rigid]
    dist = good.centers.norm(dim=-1).tolist()
    c2w = good.c2w
    claimed = cams.meta.get("camera_distance")
    if claimed is not None:
        for v, d in zip(rigid, dist):
            if abs(d - float(claimed)) > tol.distance_rtol * float(claimed):
                per_frame.append((v, f"camera is {d:.4g} from the origin but the file says camera_distance={claimed}"))

    ctype = cams.meta.get("camera_type")
    spec = CAMERA_SPECS.get(ctype) if ctype is not None else None
    if ctype is not None and spec is None:
        whole.append(f"{CAMERA_FILE}: unknown camera_type {ctype!r}; known: {sorted(CAMERA_SPECS)}")
    if spec is not None:
        claim = f"camera_type {ctype!r}"
        if len(cams) != spec["n_views"]:
            whole.append(f"{CAMERA_FILE}: {len(cams)} views but {claim} has {spec['n_views']}")
        # Size-aware: the spec at another resolution is the same cameras with intrinsics scaled by W / spec
        # width (smoke samples at 64² see exactly what the 512² spec sees); the aspect ratio must match.
        s = W / spec["width"]
        if abs(H - spec["height"] * s) > 1e-9:
            whole.append(f"{CAMERA_FILE}: image size {W}x{H} does not have the aspect of {claim} "
                         f"({spec['width']}x{spec['height']})")
        spec = {**spec, **{k: spec[k] * s for k in ("fx", "fy", "cx", "cy")}}
        for v in range(len(cams)):
            if not finite_K[v]:
                continue
            for name in ("fx", "fy", "cx", "cy"):
                got, want = float(getattr(cams, name)[v]), float(spec[name])
                allowed = tol.focal_rtol * want if name.startswith("f") else tol.principal_atol_px
                if abs(got - want) > allowed:
                    per_frame.append((v, f"{name}={got:g} but {claim} has {name}={want:g} "
                                         "(raw rig intrinsics copied instead of the standard ones?)"))
        for v, d, o, z in zip(rigid, dist, c2w[:, :3, 3], c2w[:, :3, 2]):
            if abs(d - spec["distance"]) > tol.distance_rtol * spec["distance"]:
                per_frame.append((v, f"camera is {d:.4g} from the origin but {claim} puts cameras at "
                                     f"{spec['distance']:g} (raw rig cameras copied instead of the standard ones?)"))
            miss = float(torch.linalg.cross(-o, z).norm())  # distance from the origin to the optical axis
            if float((-o) @ z) <= 0 or miss > tol.look_at_rtol * max(d, 1e-12):
                per_frame.append((v, f"camera does not look at the origin (its axis misses it by {miss:.3g}) "
                                     f"as {claim} requires"))
    return whole + _merge_frames(per_frame)


def _merge_frames(per_frame: list[tuple[int, str]]) -> list[str]:
    """One line per distinct problem, naming all the frames that have it (32 identical lines help nobody)."""
    frames: dict[str, list[int]] = {}
    for v, msg in per_frame:
        frames.setdefault(msg, []).append(v)
    return [f"{CAMERA_FILE} frame{'s' if len(vs) > 1 else ''} {', '.join(map(str, vs))}: {msg}"
            for msg, vs in frames.items()]


def _image_problems(sample_dir: Path, paths: list[Path], cams: Cameras | None,
                    tol: ValidationTolerances) -> list[str]:
    """Problems with the image files: readable, RGBA, mask present, square, sizes agree."""
    problems = []
    sizes: dict[tuple[int, int], list[int]] = {}
    for v, p in enumerate(paths):
        name = f"{_rel(p, sample_dir)} (view {v})"
        try:
            img = read_image(p)
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"{name}: {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'} ({e})")
            continue
        C, H, W = img.shape
        sizes.setdefault((W, H), []).append(v)
        if cams is not None and (W, H) != (cams.width, cams.height):
            problems.append(f"{name}: image is {W}x{H} but {CAMERA_FILE} says {cams.width}x{cams.height}")
        if C != 4:
            problems.append(f"{name}: {C} channel(s), no alpha channel; the mask must be written as alpha")
            continue
        alpha = img[3]
        if not (alpha > tol.mask_level).any():
            problems.append(f"{name}: alpha is empty (no pixel > {tol.mask_level}); the object is missing")
        elif (alpha >= tol.opaque_level).all():
            problems.append(f"{name}: alpha is fully opaque, so no mask was written; write the mask as alpha")
    for (w, h), vs in sorted(sizes.items()):
        if w != h:
            problems.append(f"views {', '.join(map(str, vs))}: images are {w}x{h}, not square; "
                            "FaceLift models take square views (crop/pad to a square, adjust cx/cy)")
    if len(sizes) > 1:
        desc = ", ".join(f"{w}x{h} (views {vs})" for (w, h), vs in sorted(sizes.items()))
        problems.append(f"images have different sizes: {desc}; all views must share one size")
    return problems


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def validate_sample(sample_dir: str | Path, expected_views: int | None = None, raise_on_error: bool = False,
                    tol: ValidationTolerances = ValidationTolerances()) -> list[str]:
    """Every way a FaceLift sample can be silently wrong -> readable problems naming file/view.

    Checks: the camera file loads; view count (vs `expected_views`, vs images referenced and vs
    PNGs present in the image folder); each image readable, square, one shared size equal to
    the camera w/h, RGBA with a non-empty alpha that is not all-opaque; intrinsics finite with
    positive focals and the principal point inside the image; w2c finite and rigid (R
    orthonormal, det +1); camera distances equal `camera_distance` when the file states one;
    and when the file claims a `camera_type` from `cameras.CAMERA_SPECS`: view count, image
    size, fx/fy/cx/cy and distance equal to that spec and every camera looking at the origin.
    Tolerances: `ValidationTolerances`. Returns [] for a good sample; with `raise_on_error`
    a bad one raises `SampleValidationError` listing all problems.
    """
    sample_dir = Path(sample_dir)
    problems: list[str] = []
    cams: Cameras | None = None
    try:
        cams = _load_cameras(sample_dir)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        problems.append(f"{CAMERA_FILE}: cannot load cameras: {e}")
    if cams is not None:
        paths = image_paths(sample_dir, cams)
        if expected_views is not None and len(cams) != expected_views:
            problems.append(f"{CAMERA_FILE}: {len(cams)} views, expected {expected_views}")
        problems += _camera_problems(cams, tol)
    elif sample_dir.is_dir():
        paths = sorted((sample_dir / "images").glob("cam_*.png"))
    else:
        paths = []
    referenced = {p.absolute() for p in paths}
    for folder in sorted({p.parent for p in paths}):
        extra = sorted(q.name for q in folder.glob("*.png") if q.absolute() not in referenced)
        if extra:
            problems.append(f"{_rel(folder, sample_dir)}/: {len(extra)} PNG(s) not referenced by {CAMERA_FILE} "
                            f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}): views and images "
                            "disagree; remove them or add their cameras")
    problems += _image_problems(sample_dir, paths, cams, tol)
    if problems and raise_on_error:
        raise SampleValidationError(sample_dir, problems)
    return problems


def validate_dataset(list_file_or_dirs: str | Path | Iterable[str | Path], raise_on_error: bool = False,
                     **kw) -> dict[str, list[str]]:
    """`validate_sample` over a list file or an iterable of sample folders -> {sample: problems}.

    Every sample gets an entry ([] when good). `kw` goes to `validate_sample` (expected_views,
    tol). With `raise_on_error`, any bad sample raises one `SampleValidationError` for them all.
    """
    if isinstance(list_file_or_dirs, (str, Path)):
        src = Path(list_file_or_dirs)
        if not src.is_file():
            raise ValueError(f"validate_dataset: {src} is not a list file; pass a list file or a list of "
                             "sample folders")
        dirs = read_list_file(src)
    else:
        dirs = [Path(d) for d in list_file_or_dirs]
    report = {str(d): validate_sample(d, **kw) for d in tqdm(dirs, desc="validate samples", leave=False)}
    bad = {d: p for d, p in report.items() if p}
    if bad and raise_on_error:
        raise SampleValidationError(f"{len(bad)} of {len(report)} samples",
                                    [f"{d}: {p}" for d, ps in bad.items() for p in ps])
    return report
