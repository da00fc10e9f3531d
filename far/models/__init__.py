"""The FAR model family: one builder, one config.

The config half is plain Python; the torch half (``build_model``) is imported on first
use, so the pipeline can read configs without importing torch.
"""

from far.models.config import BACKBONES, VARIANTS, ModelConfig, model_config

__all__ = ["BACKBONES", "VARIANTS", "ModelConfig", "model_config", "FARVisionTransformer", "build_model"]


def __getattr__(name: str):
    if name in ("FARVisionTransformer", "build_model"):
        from far.models import vit

        return getattr(vit, name)
    raise AttributeError(f"module 'far.models' has no attribute {name!r}")
