"""Shared fixtures: the FaceLift reference files, a CUDA switch, a tiny multi-view diffusion checkpoint."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout (and beside CI's clone); FACELIFT_SHARED overrides it.
SHARED = Path(os.environ.get("FACELIFT_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "facelift_reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"FaceLift reference files not found at {REFERENCE}; set FACELIFT_SHARED to the shared/ folder")
    return REFERENCE


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU box)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_mv_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, its train list): a 2-step tiny pixel multi-view diffusion model (16², 6 views at
    mouse_standard_6view) trained on random samples; for code paths, not for quality."""
    from facelift_lib.cameras import standard_cameras
    from facelift_lib.io import save_sample, write_list_file
    from facelift_lib.mvdiffusion.train import TrainParams, train

    size, root = 16, tmp_path_factory.mktemp("tiny_mv")
    cams = standard_cameras("mouse_standard_6view", size)
    dirs = []
    for i in range(2):
        img = torch.rand(6, 4, size, size, generator=torch.Generator().manual_seed(i))
        img[:, 3] = 0
        img[:, 3, 4:12, 3:13] = 1
        dirs.append(save_sample(root / "data" / f"s{i}", img, cams))
    write_list_file(root / "data" / "train.txt", dirs)
    result = train(TrainParams(run_dir=str(root / "run"), train_list=str(root / "data" / "train.txt"), val_list=None,
                               pixel_model={"image_size": size, "block_out_channels": [8, 16],
                                            "cross_attention_dim": 16, "attention_head_dim": 8},
                               max_steps=2, batch_size=2, checkpoint_every=2, val_every=0, progress=False))
    return result.last_checkpoint, root / "data" / "train.txt"
