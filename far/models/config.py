"""The model configuration: one validated, plain structure for every variant of the paper.

A config is built from a mapping (a YAML section of ``params/``) by :func:`model_config`:
``backbone`` picks a size preset, ``variant`` a preset of the method (``baseline`` =
the VideoMAE/MVD fine-tuning ViT, ``far`` = HSDA + token-group interaction +
group-averaged classifier), and any other key overrides one field. Unknown keys and
bad values are refused with a message naming the field (far.config's format).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from far.config import fail, from_mapping

ATTENTION_PATTERNS = (
    "global",
    "temporal",
    "sparse_dense",
    "head_split_temporal",
    "head_split_sparse_dense",
)
TGI_POSITIONS = ("none", "before_attn", "after_attn", "after_mlp")
CLASSIFIERS = ("global_mean", "group_mean")
GROUP_COMBINE = ("concat", "average")
POS_EMBEDS = ("videomae", "mvd")
TOKEN_ORDERS = ("grouped", "natural")
ATTN_IMPLS = ("sdpa", "explicit")
TGI_ACTS = ("none", "gelu")
TGI_IMPLS = ("auto", "conv3d", "gather", "triton")


@dataclass(frozen=True)
class ModelConfig:
    """Every architectural choice of the FAR family. Field docs say where it comes from."""

    # Input and tokenisation (VideoMAE/MVD: 16x224x224 clips, 2x16x16 tubelets).
    img_size: int = 224
    num_frames: int = 16
    tubelet_size: int = 2
    patch_size: int = 16
    in_chans: int = 3
    # Backbone size (ViT-S by default).
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # q_bias and v_bias only, as in VideoMAE (no key bias)
    pos_embed: str = "videomae"  # 1-D sin-cos (VideoMAE) or 3-D sin-cos (MVD)
    # Regularisation (Table 1: drop path 0.1).
    drop_path: float = 0.1
    attn_drop: float = 0.0
    head_drop: float = 0.0
    # Task.
    num_classes: int = 174
    head_init_scale: float = 0.001
    # FAR: attention pattern (Table 2) and the global:other head ratio (Table 5).
    attention: str = "global"
    head_ratio: tuple[int, int] = (1, 1)
    # FAR: token-group interaction (Tables 3 and 6).
    tgi: str = "none"
    tgi_groups: str | int = "heads"  # "heads" = groups = num_heads; 1 = "w/o Group"
    tgi_reduction: int = 4
    tgi_act: str = "none"  # the paper names no activation inside the bottleneck
    # FAR: classifier (Table 4).
    classifier: str = "global_mean"
    group_combine: str = "concat"
    # Implementation (no effect on the function computed, tested): token order and kernel.
    token_order: str = "grouped"
    attn_impl: str = "sdpa"
    grad_checkpointing: bool = False
    # TGI's 3x3x3 conv: "conv3d" = index_select to the grid + cuDNN Conv3d (the plain
    # definition); "gather"/"triton" = the neighbour-table formula on the grouped order
    # (PyTorch / Triton kernel, far.models.kernels); "auto" = Triton on CUDA when
    # available, else conv3d.
    tgi_impl: str = "auto"

    # ---- derived quantities -------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        """(T, H, W) of the token grid."""
        side = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def head_split(self) -> tuple[int, int]:
        """(global heads, other heads) for the head-split patterns."""
        g, o = self.head_ratio
        n_global = self.num_heads * g // (g + o)
        return n_global, self.num_heads - n_global

    @property
    def tgi_num_groups(self) -> int:
        return self.num_heads if self.tgi_groups == "heads" else int(self.tgi_groups)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["head_ratio"] = list(self.head_ratio)
        return d

    def __post_init__(self) -> None:
        _validate(self)


def _validate(c: ModelConfig) -> None:
    for name, choices in [
        ("attention", ATTENTION_PATTERNS),
        ("tgi", TGI_POSITIONS),
        ("classifier", CLASSIFIERS),
        ("group_combine", GROUP_COMBINE),
        ("pos_embed", POS_EMBEDS),
        ("token_order", TOKEN_ORDERS),
        ("attn_impl", ATTN_IMPLS),
        ("tgi_act", TGI_ACTS),
        ("tgi_impl", TGI_IMPLS),
    ]:
        if getattr(c, name) not in choices:
            fail(name, f"{getattr(c, name)!r} is not one of {', '.join(choices)}")
    for name in ("img_size", "num_frames", "tubelet_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) <= 0:
            fail(name, f"must be a positive integer, got {getattr(c, name)!r}")
    if c.img_size % c.patch_size:
        fail("img_size", f"{c.img_size} is not a multiple of patch_size {c.patch_size}")
    if c.num_frames % c.tubelet_size:
        fail("num_frames", f"{c.num_frames} is not a multiple of tubelet_size {c.tubelet_size}")
    if c.embed_dim % c.num_heads:
        fail("embed_dim", f"{c.embed_dim} is not divisible by num_heads {c.num_heads}")
    if c.pos_embed == "mvd" and c.embed_dim % 16:
        fail("pos_embed", "the MVD 3-D sin-cos embedding needs embed_dim divisible by 16")
    if len(c.head_ratio) != 2 or min(c.head_ratio) < 1:
        fail("head_ratio", f"must be two positive integers global:other, got {c.head_ratio!r}")
    if c.attention.startswith("head_split"):
        g, o = c.head_ratio
        if c.num_heads % (g + o):
            fail("head_ratio", f"{g}:{o} does not divide num_heads {c.num_heads}")
    for name in ("drop_path", "attn_drop", "head_drop"):
        if not 0.0 <= getattr(c, name) < 1.0:
            fail(name, f"must be in [0, 1), got {getattr(c, name)!r}")
    if c.tgi != "none":
        width = c.embed_dim // c.tgi_reduction
        if c.embed_dim % c.tgi_reduction:
            fail("tgi_reduction", f"{c.tgi_reduction} does not divide embed_dim {c.embed_dim}")
        if c.tgi_groups != "heads" and (not isinstance(c.tgi_groups, int) or c.tgi_groups < 1):
            fail("tgi_groups", f"must be 'heads' or a positive integer, got {c.tgi_groups!r}")
        if width % c.tgi_num_groups:
            fail("tgi_groups", f"{c.tgi_num_groups} groups do not divide the bottleneck width {width}")
    needs_groups = c.attention in ("sparse_dense", "head_split_sparse_dense") or c.classifier == "group_mean"
    t, h, w = c.grid
    if needs_groups and h * w < 2:
        fail("img_size", "the checkerboard groups need at least 2 spatial positions")


# Backbone sizes. ViT-S/ViT-B as in the paper; the CPU sizes keep heads divisible by
# 2 and 3 so every head-split ratio of Table 5 (1:1, 2:1, 1:2) works.
BACKBONES: dict[str, dict[str, Any]] = {
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12),
    # Embedded default: 8x64x64 clips (4x4x4 tokens), ~0.4 M parameters.
    "vit_tiny_cpu": dict(embed_dim=96, depth=4, num_heads=6, img_size=64, num_frames=8),
    # A slightly larger CPU size for quick experiments.
    "vit_mini_cpu": dict(embed_dim=192, depth=6, num_heads=6, img_size=96, num_frames=8),
}

# Method presets. "baseline" is the VideoMAE/MVD fine-tuning ViT (global attention);
# "far" is the paper's full model: HSDA 1:1 + TGI before attention (groups = heads)
# + group-averaged classifier (concatenation, see docs/model.md).
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": dict(attention="global", tgi="none", classifier="global_mean"),
    "far": dict(attention="head_split_sparse_dense", head_ratio=(1, 1), tgi="before_attn", tgi_groups="heads", classifier="group_mean"),
}

_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def model_config(spec: Mapping[str, Any] | ModelConfig | None = None, **overrides: Any) -> ModelConfig:
    """Build a :class:`ModelConfig` from ``{"backbone": ..., "variant": ..., <field>: ...}``.

    Precedence: dataclass defaults < backbone preset < variant preset < explicit keys.
    """
    if isinstance(spec, ModelConfig):
        spec = spec.to_dict()
    spec = dict(spec or {}) | overrides
    values: dict[str, Any] = {}
    backbone = spec.pop("backbone", None)
    variant = spec.pop("variant", None)
    if backbone is not None:
        if backbone not in BACKBONES:
            fail("backbone", f"{backbone!r} is not one of {', '.join(BACKBONES)}")
        values |= BACKBONES[backbone]
    if variant is not None:
        if variant not in VARIANTS:
            fail("variant", f"{variant!r} is not one of {', '.join(VARIANTS)}")
        values |= VARIANTS[variant]
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        fail(unknown[0], f"unknown key (known: backbone, variant, {', '.join(sorted(_FIELDS))})")
    values |= spec
    if "head_ratio" in values:
        ratio = values["head_ratio"]
        if isinstance(ratio, str):  # "2:1" as written in Table 5
            ratio = ratio.split(":")
        try:
            values["head_ratio"] = tuple(int(r) for r in ratio)
        except (TypeError, ValueError):
            fail("head_ratio", f"must look like [1, 1] or '1:1', got {ratio!r}")
    return from_mapping(ModelConfig, values)
