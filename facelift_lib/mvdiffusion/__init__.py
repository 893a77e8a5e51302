"""Multi-view diffusion (stage 1: one image -> 6 views at a standard camera spec).

model.py: stock diffusers UNet + multi-view attention processor, conditioning, small CPU model.
pipeline.py: load a local FaceLift diffusers folder, DDIM/CFG sampling, checkpoints -> models.
train.py: training (notebook-callable and accelerate/torchrun-launchable).
"""
from .model import (FACELIFT_UNET_CONFIG, LatentMVDiffusion, MultiViewAttnProcessor, PixelModelConfig,
                    PixelMVDiffusion, ViewEmbedding, set_multiview_attention)
from .pipeline import MVDiffusionPipeline, load_checkpoint_pipeline, load_facelift_pipeline, sample_views

__all__ = ["FACELIFT_UNET_CONFIG", "LatentMVDiffusion", "MultiViewAttnProcessor", "PixelModelConfig",
           "PixelMVDiffusion", "ViewEmbedding", "set_multiview_attention",
           "MVDiffusionPipeline", "load_checkpoint_pipeline", "load_facelift_pipeline", "sample_views"]
