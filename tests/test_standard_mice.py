"""standard_mice: disjoint split seeds, the cache (kept / refused), ground truth regenerated from a sample."""
from __future__ import annotations

import json

import pytest
import torch

from facelift_lib.io import load_sample, read_list_file
from facelift_lib.standard_mice import (MouseDataConfig, mouse_seeds, random_mouse, render_mice,
                                        sample_mouse_ground_truth, split_of_seed)

CFG = MouseDataConfig(size=32, n_gaussians=600)


def test_split_seeds_are_disjoint_and_bounded():
    seeds = {s: set(mouse_seeds(s, 50)) for s in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"]) and not (seeds["val"] & seeds["test"])
    assert all(split_of_seed(x) == s for s, xs in seeds.items() for x in xs)
    with pytest.raises(ValueError, match="another split"):
        mouse_seeds("train", 10, start=999_995)


def test_mice_differ_by_seed_and_repeat_for_a_seed():
    a, b = random_mouse(3, CFG), random_mouse(4, CFG)
    assert a[0] == random_mouse(3, CFG)[0] and torch.equal(a[1], random_mouse(3, CFG)[1])
    assert a[0] != b[0]


def test_render_mice_caches_and_refuses_other_settings(tmp_path):
    r = render_mice(tmp_path, "test", 2, CFG, progress=False)
    assert r.rendered == 2 and [p.name for p in read_list_file(r.list_file)] == ["mouse_2000000", "mouse_2000001"]
    images, cams = load_sample(r.dirs[0], background=None)
    assert images.shape == (6, 4, 32, 32) and cams.meta["camera_type"] == "mouse_standard_6view"
    assert 0.005 < float(images[:, 3].mean()) < 0.5  # a mouse, not an empty or a full frame
    again = render_mice(tmp_path, "test", 3, CFG, progress=False)
    assert again.rendered == 1  # the first two came from the cache
    assert again.list_file.name == "test_0-2.txt" and r.list_file.name == "test_0-1.txt"
    assert len(read_list_file(again.list_file)) == 3
    # evaluating a few of the cached mice (as the benchmarks do) leaves the bigger set's list as it was
    few = render_mice(tmp_path, "test", 1, CFG, start=1, progress=False)
    assert few.rendered == 0 and [p.name for p in read_list_file(few.list_file)] == ["mouse_2000001"]
    assert len(read_list_file(tmp_path / "test_0-2.txt")) == 3
    with pytest.raises(ValueError, match="mouse_2000000.*other settings"):
        render_mice(tmp_path, "test", 1, MouseDataConfig(size=32, n_gaussians=700), progress=False)


def test_cache_folder_keeps_camera_sets_apart_and_names_the_recipes_folders():
    from pathlib import Path

    import yaml

    assert MouseDataConfig(size=64).cache_folder == "64"
    rig = MouseDataConfig(size=64, camera_type="mouse_rig_6view")
    assert rig.cache_folder == "64_mouse_rig_6view"
    # the GS-LRM recipe's phase 2 reads both camera sets from the folders the benchmarks evaluate
    recipe = Path(__file__).resolve().parents[1] / "weights" / "recipes" / "gslrm_demo.rig.yaml"
    folders = [Path(p).parent.name for p in yaml.safe_load(recipe.read_text())["train_list"]]
    assert folders == [MouseDataConfig(size=64).cache_folder, rig.cache_folder]


def test_ground_truth_projects_inside_the_mask(tmp_path):
    r = render_mice(tmp_path, "val", 1, CFG, progress=False)
    g, units_per_mm = sample_mouse_ground_truth(r.dirs[0])
    images, cams = load_sample(r.dirs[0], background=None)
    assert abs(1 / units_per_mm - json.loads((r.dirs[0] / "opencv_cameras.json").read_text())
               ["standard_mouse"]["mm_per_unit"]) < 1e-9
    pix, _ = cams.project(g.means.double())  # [V,N,2], pixel centres at +0.5
    x, y = pix[..., 0].long().clamp(0, 31), pix[..., 1].long().clamp(0, 31)
    alpha = torch.stack([images[v, 3][y[v], x[v]] for v in range(len(cams))])
    assert float((alpha > 0.5).float().mean()) > 0.9  # the centres of the true mouse fall on its mask
