"""Shared fixtures: the FaceLift reference files and a CUDA switch."""
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
