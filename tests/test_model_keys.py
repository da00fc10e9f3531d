"""Checkpoint keys are a file format: the state_dict keys and shapes of every paper variant are pinned.

far/checkpoints.py maps the official VideoMAE/MVD/Hugging Face names onto these keys and
saved far checkpoints load by them, so no change of the model code may move one. The
digests below were computed from the model code of commit 030e8c0 (before the variant was
resolved at construction, issue 15); the literal keys say what the names look like.
"""

import hashlib

import pytest
import torch

from far.models import build_model

S = dict(backbone="vit_s")
FAR_S = dict(backbone="vit_s", variant="far")
# name: (model spec, number of keys, sha256 of the sorted "key [shape]" lines, first 16 hex digits)
PINNED = {
    "vit_s baseline": (dict(S, variant="baseline"), 162, "d297c0b45d67141d"),
    "vit_b baseline": (dict(backbone="vit_b", variant="baseline"), 162, "f0a774851ba93368"),
    "vit_s far": (FAR_S, 234, "7982c93a34682baf"),
    "vit_b far": (dict(backbone="vit_b", variant="far"), 234, "8c57a22cfb0ef8f8"),
    "vit_s far mvd k400": (dict(FAR_S, pos_embed="mvd", num_classes=400), 234, "536addb3c891b6f1"),
    # Table 2: the attention patterns (no TGI, global mean)
    "vit_s sparse_dense": (dict(S, attention="sparse_dense"), 162, "d297c0b45d67141d"),
    "vit_s temporal": (dict(S, attention="temporal"), 162, "d297c0b45d67141d"),
    "vit_s head_split_temporal": (dict(S, attention="head_split_temporal"), 162, "d297c0b45d67141d"),
    "vit_s head_split_sparse_dense": (dict(S, attention="head_split_sparse_dense"), 162, "d297c0b45d67141d"),
    # Table 3: TGI without groups, and no TGI under the group-mean classifier
    "vit_s far tgi_groups=1": (dict(FAR_S, tgi_groups=1), 234, "084a42f28c37809f"),
    "vit_s far tgi=none": (dict(FAR_S, tgi="none"), 162, "b5577747f829b0d2"),
    # Table 4: the classifiers
    "vit_s far global_mean": (dict(FAR_S, classifier="global_mean"), 234, "e2174c01bf5fa45a"),
    "vit_s far average": (dict(FAR_S, group_combine="average"), 234, "e2174c01bf5fa45a"),
    # Table 5: a head ratio; Table 6: the TGI positions
    "vit_s far 2:1": (dict(FAR_S, head_ratio=(2, 1)), 234, "7982c93a34682baf"),
    "vit_s far after_attn": (dict(FAR_S, tgi="after_attn"), 234, "7982c93a34682baf"),
    "vit_s far after_mlp": (dict(FAR_S, tgi="after_mlp"), 234, "7982c93a34682baf"),
    # the implementation choices compute the same function with the same keys
    "vit_s far definition": (dict(FAR_S, token_order="natural", tgi_impl="conv3d", attn_impl="explicit"), 234, "7982c93a34682baf"),
    "vit_s far gather": (dict(FAR_S, tgi_impl="gather"), 234, "7982c93a34682baf"),
    # the CPU sizes of the embedded default
    "vit_tiny_cpu far": (dict(backbone="vit_tiny_cpu", variant="far"), 82, "ec4f8e07fb904262"),
    "vit_mini_cpu baseline": (dict(backbone="vit_mini_cpu", variant="baseline"), 84, "1febd829312362af"),
    "vit_tiny_cpu no qkv bias": (dict(backbone="vit_tiny_cpu", qkv_bias=False), 50, "3aaa40315adf98a0"),
}


def key_shapes(spec) -> list[str]:
    """The sorted ``key [shape]`` lines of the model's state_dict (built on 'meta': no weights)."""
    with torch.device("meta"):
        model = build_model(spec)
    return sorted(f"{k} {list(v.shape)}" for k, v in model.state_dict().items())


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(PINNED))
def test_state_dict_keys_and_shapes_are_pinned(name):
    spec, count, expected = PINNED[name]
    lines = key_shapes(spec)
    assert (len(lines), digest(lines)) == (count, expected), "\n".join(lines)


def test_literal_keys_of_the_far_model():
    """What the names look like: VideoMAE's for the backbone, ``blocks.N.tgi.*`` for FAR's
    new modules, ``fc_norm``/``head`` for the classifier; the fixed position table is no key."""
    shapes = dict(line.split(" ", 1) for line in key_shapes(FAR_S))
    assert {k: shapes.get(k) for k in [
        "patch_embed.proj.weight", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.attn.qkv.weight",
        "blocks.0.attn.proj.bias", "blocks.11.mlp.fc2.weight", "blocks.11.tgi.down.weight",
        "blocks.11.tgi.conv.weight", "blocks.11.tgi.up.bias", "fc_norm.weight", "head.weight",
    ]} == {
        "patch_embed.proj.weight": "[384, 3, 2, 16, 16]", "blocks.0.attn.q_bias": "[384]",
        "blocks.0.attn.v_bias": "[384]", "blocks.0.attn.qkv.weight": "[1152, 384]",
        "blocks.0.attn.proj.bias": "[384]", "blocks.11.mlp.fc2.weight": "[384, 1536]",
        "blocks.11.tgi.down.weight": "[96, 384]", "blocks.11.tgi.conv.weight": "[96, 16, 3, 3, 3]",
        "blocks.11.tgi.up.bias": "[384]", "fc_norm.weight": "[384]", "head.weight": "[174, 768]",
    }
    assert not any("pos_embed" in k or "attn.k_bias" in k or "mask" in k for k in shapes)
