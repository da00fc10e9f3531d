"""The model family: the fast grouped path equals the masked definition, configs, shapes."""

import itertools
import math

import pytest
import torch

from far.models import build_model, model_config
from far.models.attention import explicit_attention
from far.models.layout import TokenLayout
from far.models.pos_embed import position_embedding
from reference_defs import SMALL, definition_pair as _pair

PATTERNS = ["global", "temporal", "sparse_dense", "head_split_temporal", "head_split_sparse_dense"]
RATIOS = [(1, 1), (2, 1), (1, 2)]


def test_layout_is_a_checkerboard_of_tubes():
    lay = TokenLayout(4, 4, 4)
    assert lay.group_sizes == (32, 32)
    g = lay.natural_token_group()[lay.perm]
    assert (g[:32] == 0).all() and (g[32:] == 1).all()
    # inside a group: runs of T tokens share one spatial position (tubes)
    pos = lay.natural_token_position()[lay.perm].view(-1, lay.t)
    assert (pos == pos[:, :1]).all()
    assert torch.equal(lay.perm[lay.inv_perm], torch.arange(64))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_attention_pattern_equals_masked_definition(pattern):
    """Attention output, computed from scratch with explicit masks in (t,h,w) order."""
    fast, _ = _pair(attention=pattern)
    attn = fast.blocks[0].attn
    lay = fast.layout
    x = torch.randn(2, lay.num_tokens, 96)  # natural order
    # definition: per head, softmax over the allowed keys
    cfg = fast.cfg
    bias = torch.cat([attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias])
    qkv = (x @ attn.qkv.weight.T + bias).view(2, -1, 3, cfg.num_heads, 16).permute(2, 0, 3, 1, 4)
    n_global, n_other = cfg.head_split
    other = {"temporal": "temporal", "sparse_dense": "sparse_dense"}
    head_masks = []
    for h in range(cfg.num_heads):
        if pattern in other:
            head_masks.append(lay.mask(pattern))
        elif pattern == "global" or h < n_global:
            head_masks.append(lay.mask("global"))
        else:
            head_masks.append(lay.mask(pattern.removeprefix("head_split_")))
    mask = torch.stack(head_masks)[None]
    scores = (qkv[0] @ qkv[1].transpose(-1, -2)) / 4.0
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ qkv[2]
    ref = attn.proj(ref.transpose(1, 2).reshape(2, -1, 96))
    with torch.no_grad():
        got = attn(x[:, lay.perm])[:, lay.inv_perm]
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pattern,ratio", [(p, r) for p in PATTERNS for r in RATIOS if p.startswith("head_split") or r == (1, 1)])
def test_fast_model_equals_definition(pattern, ratio):
    fast, ref = _pair(attention=pattern, head_ratio=ratio, tgi="before_attn", classifier="group_mean")
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "tgi,groups,classifier,combine",
    list(itertools.product(["before_attn", "after_attn", "after_mlp", "none"], ["heads", 1], ["global_mean", "group_mean"], ["concat", "average"])),
)
def test_tgi_and_classifier_variants_equal_definition(tgi, groups, classifier, combine):
    fast, ref = _pair(attention="head_split_sparse_dense", tgi=tgi, tgi_groups=groups, classifier=classifier, group_combine=combine)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)


def test_tgi_matches_conv3d_definition():
    """TGI = x + Conv1x1x1(Conv3x3x3_grouped(Conv1x1x1(x))) on the (T,H,W) grid."""
    fast, _ = _pair(variant="far")
    tgi = fast.blocks[0].tgi
    lay = fast.layout
    x = torch.randn(2, lay.num_tokens, 96)
    grid = x.transpose(1, 2).reshape(2, 96, lay.t, lay.h, lay.w)
    down = torch.nn.functional.conv3d(grid, tgi.down.weight[:, :, None, None, None], tgi.down.bias)
    mid = torch.nn.functional.conv3d(down, tgi.conv.weight, tgi.conv.bias, padding=1, groups=6)
    up = torch.nn.functional.conv3d(mid, tgi.up.weight[:, :, None, None, None], tgi.up.bias)
    ref = x + up.flatten(2).transpose(1, 2)
    with torch.no_grad():
        got = tgi(x[:, lay.perm])[:, lay.inv_perm]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_group_mean_classifier_definition():
    fast, _ = _pair(variant="far")
    lay = fast.layout
    x = torch.randn(2, lay.num_tokens, 96)
    g = lay.natural_token_group()
    ref = torch.cat([fast.fc_norm(x[:, g == 0].mean(1)), fast.fc_norm(x[:, g == 1].mean(1))], -1)
    torch.testing.assert_close(fast.pool(x[:, lay.perm]), ref)


def test_explicit_attention_equals_sdpa():
    q, k, v = torch.randn(3, 2, 3, 10, 8).unbind(0)
    torch.testing.assert_close(explicit_attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))
    fast, _ = _pair(variant="far")
    slow = build_model(**SMALL, variant="far", attn_impl="explicit").eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), slow(x), rtol=1e-5, atol=1e-5)


def test_odd_grid_unequal_groups():
    """A 3x3 spatial grid has groups of 5 and 4 positions: still equal to the definition."""
    fast, ref = _pair(variant="far", img_size=48)
    assert fast.layout.group_sizes == (20, 16)
    x = torch.randn(1, 3, 8, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)


def test_paper_parameter_counts():
    count = lambda **kw: sum(p.numel() for p in build_model(backbone="vit_s", **kw).parameters())
    assert count(variant="baseline") == 21_946_926
    assert count(variant="far") == 23_403_054
    assert count(variant="far", tgi_groups=1) - count(variant="far") == 12 * (323_136 - 115_776)


def test_position_embeddings():
    vm = position_embedding("videomae", 8, 14, 14, 384)
    assert vm.shape == (1568, 384)
    assert torch.allclose(vm[5, 0], torch.sin(torch.tensor(5.0))) and torch.allclose(vm[5, 1], torch.cos(torch.tensor(5.0)))
    mvd = position_embedding("mvd", 8, 14, 14, 384)
    # first D/4 channels depend on t only, the rest on (h, w) only
    t_part, s_part = mvd.view(8, 196, 384)[..., :96], mvd.view(8, 196, 384)[..., 96:]
    assert torch.equal(t_part, t_part[:, :1].expand_as(t_part))
    assert torch.equal(s_part, s_part[:1].expand_as(s_part))
    m = build_model(**SMALL)
    m.set_pos_embed("mvd")
    assert m.cfg.pos_embed == "mvd"


def test_config_is_validated_with_field_names():
    with pytest.raises(ValueError, match="^attention: "):
        model_config(attention="sparse")
    with pytest.raises(ValueError, match="^colour: "):
        model_config(colour="red")
    with pytest.raises(ValueError, match="^head_ratio: "):
        model_config(backbone="vit_s", attention="head_split_sparse_dense", head_ratio=(1, 4))
    with pytest.raises(ValueError, match="^backbone: "):
        model_config(backbone="vit_h")
    assert model_config(head_ratio="2:1").head_split == (4, 2)
    assert model_config(backbone="vit_b", head_ratio=(1, 2)).head_split == (4, 8)


def test_backward_and_drop_path_train_mode():
    m = build_model(backbone="vit_tiny_cpu", variant="far", drop_path=0.2, grad_checkpointing=True)
    out = m(torch.randn(2, 3, 8, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_cat_linear_equals_linear_of_cat():
    """The head-split output projection (saves the head sets' outputs, not their
    concatenation) is linear(cat(xs)): gradcheck in float64, bitwise under bf16 autocast."""
    import torch.nn.functional as F

    from far.models.attention import _CatLinear

    torch.manual_seed(0)
    xs = [torch.randn(2, 5, k, dtype=torch.float64, requires_grad=True) for k in (8, 16)]
    w = torch.randn(12, 24, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b, *xs: _CatLinear.apply(w, b, *xs), (w, b, *xs))
    xs = [x.detach().bfloat16().requires_grad_() for x in xs]
    w, b = w.detach().float().requires_grad_(), b.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, ref = _CatLinear.apply(w, b, *xs), F.linear(torch.cat(xs, -1), w, b)
    assert got.dtype == ref.dtype and torch.equal(got, ref)
    g = torch.randn_like(got)
    for a, r in zip(torch.autograd.grad(got, (w, b, *xs), g), torch.autograd.grad(ref, (w, b, *xs), g)):
        assert a.dtype == r.dtype and torch.equal(a, r)


def test_head_split_projection_keeps_no_concatenation_under_compile():
    """Under torch.compile (Inductor, here on the CPU) the head-split projection must not
    keep the head concatenation for the backward: AOTAutograd's CSE would merge an
    identical cat in _CatLinear's backward with the forward's, and the partitioner
    would then save it. The compiled function's saved tensors are seen by the
    saved-tensor hooks."""
    from far.models.attention import Attention
    from far.models.config import model_config
    from far.models.layout import TokenLayout

    cfg = model_config(backbone="vit_tiny_cpu", variant="far", tgi="none")
    attn = Attention(cfg, TokenLayout(*cfg.grid))
    x = torch.randn(2, cfg.num_tokens, cfg.embed_dim, requires_grad=True)
    torch._dynamo.reset()
    fn = torch.compile(attn, fullgraph=True)
    ref = attn(x)
    fn(x)  # compile first
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        out = fn(x)
    out.sum().backward()
    torch._dynamo.reset()
    torch.testing.assert_close(out, ref)
    full_width = [s for s in saved if math.prod(s) == x.numel() and s[-1] == cfg.embed_dim]
    assert len(full_width) == 1, f"saved for backward: {saved}"  # the layer input only (qkv's weight grad)


def test_patch_embedding_is_the_conv3d():
    """The tubelet embedding computed as a GEMM equals Conv3d(kernel = stride), in
    natural order and in any token order; a clip that does not split is refused."""
    import torch.nn.functional as F

    from far.models.vit import PatchEmbed

    cfg = model_config(backbone="vit_tiny_cpu")
    pe = PatchEmbed(cfg).double()
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, dtype=torch.float64)
    ref = F.conv3d(x, pe.proj.weight, pe.proj.bias, stride=pe.kernel).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pe(x), ref, rtol=1e-12, atol=1e-12)
    order = torch.randperm(ref.shape[1])
    torch.testing.assert_close(pe(x, order), ref[:, order], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tubelets"):
        pe(x[..., :-1])
