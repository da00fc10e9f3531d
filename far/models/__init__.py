"""The FAR model family: one builder, one config."""

from far.models.config import BACKBONES, VARIANTS, ModelConfig, model_config
from far.models.vit import FARVisionTransformer, build_model

__all__ = ["BACKBONES", "VARIANTS", "ModelConfig", "model_config", "FARVisionTransformer", "build_model"]
