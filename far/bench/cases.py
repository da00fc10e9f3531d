"""What ``far bench`` times: the backbones with their batch sizes and the variants as model
configs (Something-Something V2's 174 classes, 16x224x224 clips)."""

from __future__ import annotations

from typing import Any

BATCH: dict[str, int] = {"vit_s": 32, "vit_b": 16}
NUM_CLASSES = 174
# variant name -> model config overrides on top of the backbone
VARIANTS: dict[str, dict[str, Any]] = {
    "reference": dict(variant="baseline", attn_impl="explicit"),
    "global": dict(variant="baseline"),
    "hsda": dict(variant="far", tgi="none"),
    "far_conv3d": dict(variant="far", tgi_impl="conv3d"),
    "far": dict(variant="far"),
}


def case_spec(size: str, variant: str) -> dict[str, Any]:
    """The model config mapping of one benchmarked case (``build_model``'s argument)."""
    if size not in BATCH:
        raise ValueError(f"far bench: size {size!r} is not one of {', '.join(BATCH)}")
    if variant not in VARIANTS:
        raise ValueError(f"far bench: variant {variant!r} is not one of {', '.join(VARIANTS)}")
    return dict(backbone=size, num_classes=NUM_CLASSES, **VARIANTS[variant])


def case_config(size: str, variant: str, **overrides: Any):
    """The validated :class:`far.models.ModelConfig` of one case, with ``overrides``."""
    from far.models import model_config

    return model_config(case_spec(size, variant), **overrides)
