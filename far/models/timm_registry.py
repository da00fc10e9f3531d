"""The paper's models in timm's registry, for users who build models with timm.

Importing this module registers the names below; nothing else imports it, so
``import far`` and ``import far.models`` stay free of timm (and of torch)::

    import far.models.timm_registry  # noqa: F401  (registers the far_* names)
    import timm

    model = timm.create_model("far_vit_small_patch16_224", pretrained=False, num_classes=174)

Keyword arguments are :class:`far.models.config.ModelConfig` fields (``num_classes``,
``img_size``, ``num_frames``, ``head_ratio``, ``tgi``, …) or timm's usual names
``drop_rate`` (classifier dropout), ``drop_path_rate`` and ``attn_drop_rate``. Inputs
are clips (B, 3, 16, 224, 224). timm hosts no weights of these models: ``pretrained=True``
is refused; load an official VideoMAE/MVD checkpoint with
:func:`far.checkpoints.load_checkpoint` (``far fetch`` downloads them, docs/checkpoints.md).
"""

from __future__ import annotations

from typing import Any

import far.torchvision_compat  # noqa: F401  (must precede timm)
from timm.models import register_model

from far.models.vit import FARVisionTransformer, build_model

# timm's argument names -> ModelConfig fields
_TIMM_ARGS = {"drop_rate": "head_drop", "drop_path_rate": "drop_path", "attn_drop_rate": "attn_drop"}
# What timm.create_model passes to every entrypoint besides the user's arguments.
_TIMM_BOOKKEEPING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _create(backbone: str, variant: str, pretrained: bool, kwargs: dict[str, Any]) -> FARVisionTransformer:
    """The model of ``backbone`` and ``variant`` with the caller's overrides."""
    given = [k for k in _TIMM_BOOKKEEPING if kwargs.pop(k, None) is not None]
    if pretrained or given:
        raise ValueError(f"{backbone}/{variant}: timm hosts no weights of the far models "
                         f"({'pretrained=True' if pretrained else ', '.join(given)}); build with pretrained=False and load "
                         "an official checkpoint with far.checkpoints.load_checkpoint (docs/checkpoints.md)")
    spec = {"backbone": backbone, "variant": variant} | {_TIMM_ARGS.get(k, k): v for k, v in kwargs.items()}
    return build_model(spec)


@register_model
def far_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> FARVisionTransformer:
    """FAR ViT-S/16 (16x224x224 clips, 2x16x16 tubelets): head-split sparse-dense attention
    1:1, token-group interaction before attention, group-mean classifier."""
    return _create("vit_s", "far", pretrained, kwargs)


@register_model
def far_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> FARVisionTransformer:
    """FAR ViT-B/16 (16x224x224 clips, 2x16x16 tubelets): as far_vit_small_patch16_224."""
    return _create("vit_b", "far", pretrained, kwargs)


@register_model
def far_baseline_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> FARVisionTransformer:
    """The VideoMAE/MVD fine-tuning ViT-S/16 FAR is compared with: global attention, mean pooling."""
    return _create("vit_s", "baseline", pretrained, kwargs)


@register_model
def far_baseline_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> FARVisionTransformer:
    """The VideoMAE/MVD fine-tuning ViT-B/16 FAR is compared with: global attention, mean pooling."""
    return _create("vit_b", "baseline", pretrained, kwargs)
