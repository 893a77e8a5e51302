"""Shipped weights: the manifest check (missing file, altered byte, missing entry) on a tiny model built here,
and the shipped GS-LRM beating an untrained one on unseen test mice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facelift_lib.gslrm.model import GSLRM, GSLRMConfig
from facelift_lib.weights import (WEIGHTS_DIR, MANIFEST, ShippedWeightsError, load_shipped, load_shipped_pipeline,
                                  ship, shipped_path, verify_shipped)

TINY = GSLRMConfig(image_size=16, patch_size=4, d=32, n_layers=1, n_heads=2)


@pytest.fixture
def shipped(tmp_path):
    """A tiny model's training checkpoint shipped into tmp_path/weights as 'tiny'."""
    torch.manual_seed(0)
    model = GSLRM(TINY)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": TINY.to_dict(), "fwdbwd_pass_step": 7,
                "optimizer": {}}, run / "checkpoints" / f"ckpt_{7:016d}.pt")
    (run / "log.jsonl").write_text('{"step": 7, "loss": 0.5}\n')
    weights = tmp_path / "weights"
    weights.mkdir()
    ship("tiny", run, weights_dir=weights, training_command="make tiny")
    return weights, model


def test_ship_and_load_round_trip(shipped):
    weights, model = shipped
    entry = json.loads((weights / MANIFEST).read_text())["tiny"]
    assert entry["steps"] == 7 and entry["model_config"] == TINY.to_dict() and entry["training_command"] == "make tiny"
    assert (weights / entry["log"]).read_text() == '{"step": 7, "loss": 0.5}\n'
    loaded = load_shipped("tiny", weights)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_file_is_an_error_naming_it_and_the_fix(shipped):
    weights, _ = shipped
    (weights / "tiny.pt").unlink()
    with pytest.raises(ShippedWeightsError, match=r"tiny\.pt not found.*(git checkout|make tiny)"):
        load_shipped("tiny", weights)


def test_altered_byte_is_an_error(shipped):
    weights, _ = shipped
    data = bytearray((weights / "tiny.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (weights / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(ShippedWeightsError, match=r"tiny\.pt are altered: sha256"):
        verify_shipped("tiny", weights)


def test_missing_entry_and_manifest(shipped, tmp_path):
    weights, _ = shipped
    with pytest.raises(ShippedWeightsError, match="no entry 'other'"):
        verify_shipped("other", weights)
    (weights / MANIFEST).unlink()
    with pytest.raises(ShippedWeightsError, match="manifest.json not found"):
        verify_shipped("tiny", weights)


@pytest.fixture
def shipped_mv(tiny_mv_checkpoint, tmp_path):
    """The tiny diffusion checkpoint shipped into tmp_path/weights as 'tiny_mv'."""
    weights = tmp_path / "weights"
    weights.mkdir()
    ship("tiny_mv", tiny_mv_checkpoint[0], weights_dir=weights, training_command="make tiny_mv")
    return weights


def test_diffusion_ships_its_ema_weights_and_samples_as_the_run(tiny_mv_checkpoint, shipped_mv):
    from facelift_lib.mvdiffusion import load_checkpoint_pipeline

    ckpt, weights = tiny_mv_checkpoint[0], shipped_mv
    entry = json.loads((weights / MANIFEST).read_text())["tiny_mv"]
    assert entry["kind"] == "mvdiffusion" and entry["steps"] == 2
    shipped = torch.load(weights / "tiny_mv.pt", weights_only=True)
    assert "optimizer" not in shipped and "rng" not in shipped and shipped["ema"] is None
    run, pipe = load_checkpoint_pipeline(ckpt), load_shipped_pipeline("tiny_mv", weights)
    ref = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = (p(ref, num_inference_steps=2, guidance_scale=2.0, eta=0.0, seed=0, progress=False) for p in (run, pipe))
    assert torch.allclose(a, b, atol=1e-6)  # the run's EMA model, sampled the same way
    assert shipped_path("tiny_mv", "mvdiffusion", weights) == weights / "tiny_mv.pt"
    with pytest.raises(ShippedWeightsError, match="'mvdiffusion' model, not 'gslrm'"):
        load_shipped("tiny_mv", weights)


def test_diffusion_training_starts_from_shipped_weights(tiny_mv_checkpoint, shipped_mv, tmp_path):
    from facelift_lib.mvdiffusion.pipeline import read_checkpoint
    from facelift_lib.mvdiffusion.train import TrainParams, build_model

    (ckpt, train_list), weights = tiny_mv_checkpoint, shipped_mv
    run = read_checkpoint(ckpt)
    params = TrainParams(run_dir=str(tmp_path / "run"), train_list=str(train_list), val_list=None,
                         pixel_model=run["model_config"], init_from=str(shipped_path("tiny_mv", "mvdiffusion", weights)))
    model, _ = build_model(params)
    shipped = torch.load(weights / "tiny_mv.pt", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, shipped[k]), k


def _shipped(name: str) -> str | None:
    path = WEIGHTS_DIR / MANIFEST
    return name if path.is_file() and name in json.loads(path.read_text()) else None


@pytest.mark.parametrize("name", ["gslrm_demo_128", "gslrm_demo"])  # the demo's model and the 64² one it came from
def test_shipped_gslrm_beats_untrained_on_unseen_test_mice(name, tmp_path):
    from facelift_lib.reconstruct import view_count_table
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    if _shipped(name) is None:
        pytest.skip(f"no GS-LRM {name} shipped in weights/manifest.json")
    trained = load_shipped(name)
    torch.manual_seed(0)
    untrained = GSLRM(trained.config).eval()
    # test-range mice (never trained on: the split seed ranges are disjoint) other than BENCHMARKS' first 16
    mice = render_mice(tmp_path, "test", 3, MouseDataConfig(size=trained.config.image_size), start=100,
                       progress=False)
    scores = {name: view_count_table(m, mice.dirs, ks=[6])[0].loc[6]
              for name, m in (("trained", trained), ("untrained", untrained))}
    assert scores["trained"]["psnr_masked"] > scores["untrained"]["psnr_masked"] + 3.0
    assert scores["trained"]["mask_iou"] > scores["untrained"]["mask_iou"] + 0.2


def test_the_demo_gslrm_is_the_smoke_model_and_its_recipe_starts_from_the_64_model():
    """Notebook 05's default model (gslrm.train.SMOKE_MODEL) is the shipped demo GS-LRM's config, and the demo's
    recipe starts from the other shipped file (so the chain can be re-run from the repository alone)."""
    import yaml

    from facelift_lib.gslrm.train import SMOKE_MODEL
    from facelift_lib.weights import DEFAULT_SHIPPED

    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    demo = manifest[DEFAULT_SHIPPED["gslrm"]]
    assert GSLRMConfig(**SMOKE_MODEL) == GSLRMConfig(**demo["model_config"])
    recipe = yaml.safe_load((WEIGHTS_DIR / "recipes" / f"{DEFAULT_SHIPPED['gslrm']}.yaml").read_text())
    assert GSLRMConfig(**recipe["model"]) == GSLRMConfig(**demo["model_config"])
    parent = recipe["init_from"].removeprefix("weights/")
    assert recipe["init_double_resolution"] and parent in {e["file"] for e in manifest.values()}


@pytest.mark.skipif(_shipped("mvdiffusion_demo") is None, reason="no diffusion weights shipped in weights/manifest.json")
def test_shipped_diffusion_makes_a_mouse_where_an_untrained_one_makes_noise(tmp_path):
    """Generated views vs the true views of unseen test mice: the shipped model's masks overlap the true ones,
    an untrained model of the same architecture's do not."""
    from facelift_lib.images import on_white
    from facelift_lib.io import load_sample
    from facelift_lib.mvdiffusion.pipeline import MVDiffusionPipeline
    from facelift_lib.mvdiffusion.train import view_quality
    from facelift_lib.standard_mice import MouseDataConfig, render_mice

    trained = load_shipped_pipeline("mvdiffusion_demo")
    torch.manual_seed(0)
    untrained = MVDiffusionPipeline(model=trained.model.untrained_like(), scheduler=trained.scheduler,
                                    camera_type=trained.camera_type)  # the same retrieval bank: only training differs
    mice = render_mice(tmp_path, "test", 2, MouseDataConfig(size=trained.model.image_size), start=100, progress=False)
    truth = torch.stack([load_sample(d, background=None)[0] for d in mice.dirs])
    target = on_white(truth.flatten(0, 1)).view_as(truth)
    iou = {name: torch.tensor(view_quality(p(truth[:, 0], 10, 2.0, seed=0, progress=False, eta=0.0), target)["mask_iou"])
           for name, p in (("trained", trained), ("untrained", untrained))}
    assert float(iou["trained"].mean()) > float(iou["untrained"].mean()) + 0.2


def test_the_shipped_weights_fit_the_issues_30_mb():
    """Issue 14: the shipped weights total at most 30 MB (the diffusion model's retrieval bank is 7.4 MB of it)."""
    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    sizes = {e["file"]: (WEIGHTS_DIR / e["file"]).stat().st_size for e in manifest.values()}
    assert all(sizes[e["file"]] == e["bytes"] for e in manifest.values())
    assert sum(sizes.values()) <= 30e6, sizes


def test_the_shipped_diffusion_model_is_its_recipes_model():
    """weights/recipes/mvdiffusion_demo.yaml (what weights/recipes/mvdiffusion_demo.sh trains) made the shipped
    file: every pixel_model setting of the recipe is the file's, and it trained the recipe's steps."""
    import yaml

    entry = json.loads((WEIGHTS_DIR / MANIFEST).read_text())["mvdiffusion_demo"]
    recipe = yaml.safe_load((WEIGHTS_DIR / "recipes" / "mvdiffusion_demo.yaml").read_text())
    assert {k: entry["model_config"][k] for k in recipe["pixel_model"]} == recipe["pixel_model"]
    assert entry["steps"] == recipe["max_steps"]
    assert entry["recipe"] == (WEIGHTS_DIR / "recipes" / "mvdiffusion_demo.yaml").read_text()


def test_the_whole_recipe_chains_its_stages():
    """weights/recipes/all.sh (both models from nothing, in series), run dry with PY=echo: every training reads mice
    rendered before it, starts from scratch or from the last checkpoint of an earlier stage (directly, or through
    the file an earlier ship wrote), and the models it names at the end are the last stages' run folders."""
    import os
    import re
    import subprocess

    import yaml

    repo = WEIGHTS_DIR.parent
    lines = subprocess.run(["bash", str(WEIGHTS_DIR / "recipes" / "all.sh")], env={**os.environ, "PY": "echo"},
                           capture_output=True, text=True, check=True).stdout.splitlines()
    rendered: set[str] = set()
    runs: dict[str, dict] = {}  # run_dir -> recipe, in the order trained
    shipped: dict[str, str] = {}  # weights/<name>.pt -> the run_dir it was shipped from
    for line in lines:
        words = line.split()
        if words[:2] == ["-m", "facelift_lib.standard_mice"]:
            rendered.add(words[2])
        elif words[:2] in (["-m", "facelift_lib.gslrm.train"], ["-m", "facelift_lib.mvdiffusion.train"]):
            recipe = yaml.safe_load((repo / words[-1]).read_text())
            lists = recipe["train_list"] if isinstance(recipe["train_list"], list) else [recipe["train_list"]]
            assert {str(Path(p).parent) for p in lists} <= rendered, (words[-1], rendered)
            start = recipe.get("init_from")
            if start is not None:
                parent = shipped.get(start) or str(Path(start).parent.parent)
                assert parent in runs, f"{words[-1]} starts from {start}, which no earlier stage made"
                if start not in shipped:  # an earlier stage's last checkpoint
                    assert Path(start).name == f"ckpt_{runs[parent]['max_steps']:016d}.pt", (words[-1], start)
            runs[recipe["run_dir"]] = recipe
        elif words[:1] == ["-c"] and "ship(" in line:
            name, source = re.search(r"ship\('(\w+)', '([^']+)'", line).groups()
            assert source in runs, f"ship({name!r}) from {source}, which no earlier stage made"
            shipped[f"weights/{name}.pt"] = source
    diffusion = yaml.safe_load((WEIGHTS_DIR / "recipes" / "mvdiffusion_demo.yaml").read_text())["run_dir"]
    assert list(shipped) == ["weights/gslrm_demo.pt"] and diffusion in runs
    assert list(runs)[-1] in lines[-1] and diffusion in lines[-1]  # what the last line says to measure and ship
