"""Preprocessing speed: views/s per method, 1152x1024 rig views -> 512² FaceLift samples.

    .venv/bin/python benchmarks/bench_preprocess.py [--frames 24] [--size 512] [--workers 2] [--repeats 3]
                                                    [--image-ext .png .jpg] [--mask-bits 1 8]

Synthetic frames: the 6 cameras of synthetic_rig.markerless_mouse_rig(), camera-like images (smooth colour field +
Gaussian noise, sigma 8 grey levels, so PNGs compress like real footage) and the filled silhouette of a
mouse-sized ellipsoid as the mask. Per method, median of `repeats` runs after one warm-up:
- in memory: `preprocess_frame` on decoded frames (mask stats, plan, warps), frames spread over a thread pool;
- end to end: `preprocess_rig` on the rig written to disk (decode + warp + RGBA PNG encode + JSON), for each
  format of the RGB frames (PNG, or JPEG quality 95: rig.json "image_ext") and of the mask PNGs (1-bit as
  io.write_mask writes them, or 8-bit 0/255 as many segmentation tools do);
- codec only: decoding the inputs and encoding the outputs alone (the floor of "end to end"), and each codec
  step on one thread, in ms per view (what the floor is made of).
Each as wall-clock views/s and as CPU ms per view (process CPU time, all threads). On a shared machine the
wall figure depends on the load; the CPU figure much less, and 1000 * workers / (CPU ms per view) is
what `workers` idle cores would do.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the library's per-frame bars would bury the table

import cv2
import numpy as np

from facelift_lib.calibration import save_mammal_pkl
from facelift_lib.preprocess import (PreprocessConfig, preprocess_frame, preprocess_rig,
                                     single_threaded_libraries)
from facelift_lib.io import JPEG_QUALITY, PNG_PARAMS, write_mask
from facelift_lib.rig import IMAGE_EXTS, RigFrame, frame_file
from facelift_lib.synthetic_rig import markerless_mouse_rig

CASES = [("bbox_uniform", "fixed"), ("bbox_centered", "fixed"), ("pixel_based", "fixed"),
         ("standard_camera", "fixed"), ("standard_camera", "per_view_zoom")]


def synthetic_frame(cams, frame: int, rng: np.random.Generator) -> RigFrame:
    """Camera-like images and an ellipsoid silhouette (mouse-sized, 90 x 30 x 25 mm, random pose) per view."""
    W, H = cams.width, cams.height
    yaw = rng.uniform(0, 2 * np.pi)
    center = np.array([rng.uniform(-60, 60), rng.uniform(-60, 60), 18.0])
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 48), np.linspace(0, np.pi, 24))
    pts = np.stack([45 * np.sin(v) * np.cos(u), 15 * np.sin(v) * np.sin(u), 12 * np.cos(v)], -1).reshape(-1, 3)
    R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    uv, _ = cams.project(pts @ R.T + center)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    images, masks = [], []
    for i in range(len(cams)):
        mask = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(uv[i].numpy().astype(np.float32) - 0.5).astype(np.int32), 255)
        base = np.stack([60 + 40 * np.sin(xx / 97 + i), 50 + 30 * np.cos(yy / 71),
                         40 + 20 * np.sin((xx + yy) / 53)], -1)
        img = base + rng.normal(0, 8, (H, W, 3)) + (mask[..., None] > 0) * 60
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(mask)
    files = [Path(f"{n}/{frame:06d}.png") for n in cams.names]
    return RigFrame(frame, images, masks, cams, files, files)


def write_rig(root: Path, cams, frames: list[RigFrame], image_ext: str, mask_bits: int = 1) -> Path:
    save_mammal_pkl(cams, root / "new_cam.pkl")
    for fr in frames:
        for v, name in enumerate(cams.names):
            path = frame_file(root, "images", name, fr.frame, image_ext)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), fr.images[v], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_ext == ".jpg" else [])
            mpath = frame_file(root, "masks", name, fr.frame)
            mpath.parent.mkdir(parents=True, exist_ok=True)
            if mask_bits == 1:
                write_mask(mpath, fr.masks[v])
            else:
                cv2.imwrite(str(mpath), fr.masks[v])
    (root / "rig.json").write_text(json.dumps({"units": "mm", "width": cams.width, "height": cams.height,
                                               "n_frames": len(frames), "camera_names": cams.names,
                                               "frames": [f.frame for f in frames], "image_ext": image_ext}))
    return root


def measure(fn, n_views: int, repeats: int) -> tuple[float, float]:
    """(wall views/s, CPU ms per view), medians over `repeats` runs after one warm-up."""
    fn()  # warm-up (thread pools, caches)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return n_views / statistics.median(wall), 1000 * statistics.median(cpu) / n_views


def codec_only(rig: Path, out: Path, cams, frames: list[RigFrame], size: int, workers: int, image_ext: str) -> None:
    """Decode every input image + mask and encode one RGBA output per view (background zeroed, as
    preprocess_rig writes it)."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = cv2.resize(frames[0].images[0], (size, size))
    rgba[..., 3] = cv2.resize(frames[0].masks[0], (size, size))
    rgba[..., :3][rgba[..., 3] == 0] = 0

    def one(args):
        name, f = args
        cv2.imdecode(np.fromfile(frame_file(rig, "images", name, f, image_ext), np.uint8), cv2.IMREAD_COLOR)
        cv2.imdecode(np.fromfile(frame_file(rig, "masks", name, f), np.uint8), cv2.IMREAD_GRAYSCALE)
        (out / f"{name}_{f}.png").write_bytes(cv2.imencode(".png", rgba, PNG_PARAMS)[1].tobytes())

    out.mkdir(parents=True, exist_ok=True)
    with single_threaded_libraries(), ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, [(n, fr.frame) for fr in frames for n in cams.names]))


def codec_steps(rig: Path, cams, frames: list[RigFrame], size: int, image_ext: str, repeats: int) -> dict[str, float]:
    """One thread, ms per view (median over `repeats` passes over the views): decode the RGB frame, decode the
    mask, encode the 512² RGBA output with io.PNG_PARAMS (a real output of pixel_based)."""
    files = [(frame_file(rig, "images", n, fr.frame, image_ext), frame_file(rig, "masks", n, fr.frame))
             for fr in frames for n in cams.names]
    blobs = [(np.fromfile(i, np.uint8), np.fromfile(m, np.uint8)) for i, m in files]
    rgba, _ = preprocess_frame(frames[0], PreprocessConfig(method="pixel_based", size=size))
    outs = [cv2.bitwise_and(v, v, mask=v[..., 3]) for v in rgba]
    steps = {"decode RGB frame": lambda: [cv2.imdecode(b, cv2.IMREAD_COLOR) for b, _ in blobs],
             "decode mask": lambda: [cv2.imdecode(m, cv2.IMREAD_GRAYSCALE) for _, m in blobs],
             "encode RGBA output": lambda: [cv2.imencode(".png", outs[k % len(outs)], PNG_PARAMS)
                                            for k in range(len(blobs))]}
    result = {}
    with single_threaded_libraries():
        for name, fn in steps.items():
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            result[name] = 1000 * statistics.median(times) / len(blobs)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lens", default="pinhole", choices=["pinhole", "real"],
                    help="synthetic_rig.markerless_mouse_rig lens: 'real' adds the real calibration's skew and "
                         "strong distortion")
    ap.add_argument("--image-ext", nargs="+", default=[".png", ".jpg"], choices=IMAGE_EXTS,
                    help="formats of the rig's RGB frames to measure end to end")
    ap.add_argument("--mask-bits", nargs="+", type=int, default=[1, 8], choices=[1, 8],
                    help="bit depths of the rig's mask PNGs to measure end to end")
    args = ap.parse_args()

    cams = markerless_mouse_rig(lens=args.lens)
    rng = np.random.default_rng(args.seed)
    frames = [synthetic_frame(cams, f, rng) for f in range(args.frames)]
    n_views = args.frames * len(cams)
    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        rigs = {(ext, bits): write_rig(tmp / f"rig{ext}{bits}", cams, frames, ext, bits)
                for ext in args.image_ext for bits in args.mask_bits}
        print(f"{args.frames} frames x {len(cams)} views, {cams.width}x{cams.height} -> {args.size}², "
              f"{args.workers} worker thread(s); median of {args.repeats} runs")
        cols = ["in memory"] + [f"{ext[1:]} + {bits}-bit masks" for ext, bits in rigs]
        print(f"{'':34s}" + "".join(f"{c:>22s}" for c in cols))
        print(f"{'method':34s}" + f"{'views/s':>11s}{'CPU ms/v':>11s}" * len(cols))
        for method, mode in CASES:
            cfg = PreprocessConfig(method=method, size=args.size, distance_mode=mode, workers=args.workers)

            def in_memory() -> None:
                with single_threaded_libraries(), ThreadPoolExecutor(args.workers) as pool:
                    list(pool.map(lambda fr: preprocess_frame(fr, cfg), frames))

            runs = [measure(in_memory, n_views, args.repeats)]
            for rig in rigs.values():
                runs.append(measure(lambda: preprocess_rig(rig, tmp / "out", method=method, size=args.size, config=cfg),
                                    n_views, args.repeats))
            name = method if mode == "fixed" else f"{method} ({mode})"
            print(f"{name:34s}" + "".join(f"{r[0]:11.0f}{r[1]:11.1f}" for r in runs), flush=True)
        codec = [measure(lambda: codec_only(rig, tmp / "io", cams, frames, args.size, args.workers, ext),
                         n_views, args.repeats) for (ext, _), rig in rigs.items()]
        print(f"{'codec only (decode in, encode out)':34s}{'':22s}" + "".join(f"{r[0]:11.0f}{r[1]:11.1f}" for r in codec))
        print("\ncodec steps, one thread, ms per view:")
        for (ext, bits), rig in rigs.items():
            steps = codec_steps(rig, cams, frames, args.size, ext, args.repeats)
            print(f"  {ext[1:]} + {bits}-bit masks: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
