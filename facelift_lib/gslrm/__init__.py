"""GS-LRM reconstructor (FaceLift-compatible): model, trainer (notebook + torchrun), export.

`facelift_lib.gslrm.train.train(params)` is imported from its module (it pulls in the data code).
"""
from .model import GSLRM, CheckpointError, GSLRMConfig, load_facelift_checkpoint

__all__ = ["GSLRM", "GSLRMConfig", "CheckpointError", "load_facelift_checkpoint"]
