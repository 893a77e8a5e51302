"""Multi-view diffusion timings.

CPU (always): the smoke model's training step time and DDIM sampling time (20 and 50 steps, CFG) per
6-view sample; with --attention-levels instead, run 5's demo model (widths 24-48-96-96, 96² frame) per
training step at batch 2 with multi-view attention at the 1, 2, ... lowest UNet levels (8², 16², ...); with
--view-prior, run 5's model against the shipped run 7 (the same with the retrieval prior), per training step.
CUDA (only when a GPU is present): the FaceLift-size UNet (random weights, fp16) sampling at 512² (64² latents),
50 steps with classifier-free guidance, sparse vs dense multi-view attention; UNet only (VAE/CLIP run once per
sample and are the same for both).

    .venv/bin/python benchmarks/bench_mvdiffusion.py [--threads N] [--repeats R] [--attention-levels 1 2 3 | --view-prior]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from timing import time_calls  # benchmarks/timing.py (the script's own folder is on sys.path)


def _time(fn, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """(median, best) seconds of `repeats` calls after a warm-up."""
    times = time_calls(fn, repeats, sync)
    return statistics.median(times), min(times)


def _train_step_time(model, batch: int, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of one AdamW training step of `model` on random views [batch,6,4,F,F]."""
    from diffusers import DDPMScheduler

    from facelift_lib.mvdiffusion.train import diffusion_loss

    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    views = torch.rand(batch, 6, 4, model.image_size, model.image_size)

    def step():
        x0 = model.encode_views(views)
        loss = diffusion_loss(model, sched, x0, model.condition(views[:, 0]), 5.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return _time(step, repeats)


def _recipe_pixel_model(name: str) -> dict:
    """pixel_model of weights/recipes/<name>.yaml."""
    from pathlib import Path

    import yaml

    recipe = Path(__file__).resolve().parents[1] / "weights" / "recipes" / f"{name}.yaml"
    pixel_model = yaml.safe_load(recipe.read_text())["pixel_model"]
    return {**pixel_model, "block_out_channels": tuple(pixel_model["block_out_channels"])}


def bench_demo_variants(rows: list[tuple[str, dict]], repeats: int) -> None:
    """Train step at batch 2 of each (label, pixel_model) row; the first row is the base of the ratios. A view
    prior's bank is filled with random alphas (the lookup costs what the shipped bank's does)."""
    from facelift_lib.mvdiffusion import PixelModelConfig, PixelMVDiffusion

    base = None
    print(f"demo models, train step at batch 2, torch threads {torch.get_num_threads()}")
    for label, pixel_model in rows:
        torch.manual_seed(0)
        cfg = PixelModelConfig(**pixel_model)
        model = PixelMVDiffusion(cfg)
        if cfg.view_prior_mice:
            model.view_prior_bank.copy_(torch.randint(0, 256, model.view_prior_bank.shape, dtype=torch.uint8))
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        med, best = _train_step_time(model, 2, repeats)
        base = base or med
        print(f"  {label} (attention down to {cfg.attention_resolution}²), {n_params:.2f} M params: "
              f"{med:.3f} s (min {best:.3f}) = {med / base:.2f}x the first row")


def bench_cpu(repeats: int) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler

    from facelift_lib.mvdiffusion import PixelModelConfig, PixelMVDiffusion, sample_views

    torch.manual_seed(0)
    cfg = PixelModelConfig()
    model = PixelMVDiffusion(cfg)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"smoke model: {cfg.image_size}² RGBA, blocks {cfg.block_out_channels}, attention at "
          f"{cfg.attention_resolution}² ({cfg.mv_attention}), {n_params:.2f} M params, "
          f"torch threads {torch.get_num_threads()}")
    for batch in (1, 2):
        med, best = _train_step_time(model, batch, repeats)
        print(f"  train step, batch {batch}: {med:.3f} s (min {best:.3f}) = {med / batch:.3f} s per 6-view sample")
    model.eval()
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=True)
    ddim = DDIMScheduler.from_config(sched.config, timestep_spacing="trailing")
    ref = torch.rand(1, 4, cfg.image_size, cfg.image_size)
    for steps in (20, 50):
        med, best = _time(lambda: sample_views(model, ddim, ref, steps, 2.0, progress=False), max(1, repeats // 3))
        print(f"  DDIM {steps} steps (CFG 2.0): {med:.2f} s (min {best:.2f}) per 6-view sample")


def bench_cuda(repeats: int) -> None:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from facelift_lib.mvdiffusion import FACELIFT_UNET_CONFIG, set_multiview_attention

    dev = torch.device("cuda")
    unet = UNet2DConditionModel(**FACELIFT_UNET_CONFIG).to(dev, torch.float16).eval()
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction", timestep_spacing="trailing")
    V, cfg_batch = 6, 2  # classifier-free guidance doubles the batch
    ctx = torch.randn(cfg_batch * V, 77, 1024, device=dev, dtype=torch.float16)
    labels = torch.randn(cfg_batch * V, 2048, device=dev, dtype=torch.float16)
    ref = torch.randn(cfg_batch * V, 4, 64, 64, device=dev, dtype=torch.float16)
    print(f"FaceLift-size UNet on {torch.cuda.get_device_name()}: 512² (64² latents), 50 DDIM steps, CFG, fp16")

    @torch.no_grad()
    def sample():
        x = torch.randn(V, 4, 64, 64, device=dev, dtype=torch.float16)
        sched.set_timesteps(50, device=dev)
        for t in sched.timesteps:
            inp = torch.cat([torch.cat([x, x]), ref], 1)
            out = unet(inp, t.expand(cfg_batch * V), encoder_hidden_states=ctx, class_labels=labels).sample
            u, c = out.chunk(2)
            x = sched.step(u + 2.0 * (c - u), t, x).prev_sample

    for mode in ("sparse", "dense"):
        set_multiview_attention(unet, V, mode)
        torch.cuda.reset_peak_memory_stats()
        med, best = _time(sample, repeats, torch.cuda.synchronize)
        mem = torch.cuda.max_memory_allocated() / 2**30
        print(f"  {mode:6s}: {med:.2f} s (min {best:.2f}) per 6-view sample, peak {mem:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--attention-levels", type=int, nargs="+", default=None, metavar="A",
                    help="time run 5's model with attention at these numbers of levels instead")
    ap.add_argument("--view-prior", action="store_true",
                    help="time run 5's model against run 7's (run 5 + the retrieval prior) instead")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.view_prior:
        bench_demo_variants([("run 5 (mvdiffusion_demo.run5.yaml)", _recipe_pixel_model("mvdiffusion_demo.run5")),
                             ("run 7 = run 5 + view prior (mvdiffusion_demo.run7.yaml)",
                              _recipe_pixel_model("mvdiffusion_demo.run7"))], args.repeats)
        return
    if args.attention_levels:
        run5 = _recipe_pixel_model("mvdiffusion_demo.run5")
        bench_demo_variants([(f"attention_levels {a}", {**run5, "attention_levels": a}) for a in args.attention_levels],
                            args.repeats)
        return
    bench_cpu(args.repeats)
    if torch.cuda.is_available():
        bench_cuda(max(1, args.repeats // 2))
    else:
        print("CUDA: skipped (no GPU): FaceLift-size UNet 512² 50-step sampling, sparse vs dense")


if __name__ == "__main__":
    main()
