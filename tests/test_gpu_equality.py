"""The models ``far bench`` times compute their definition on the GPU (``-m gpu``; the
bench runs this file and the kernel tests before timing, far/bench/gate.py).

FAR as shipped (grouped token order, the Triton TGI path, the head-split projection, the
tubelet GEMM) against the same weights in natural token order with masks and the TGI as
cuDNN Conv3d: outputs and every parameter's gradient, in float32 (TF32 off) and under
bf16 autocast, at the benchmark's shapes (16x224x224, 174 classes)."""

import pytest
import torch

from far.bench.cases import case_config
from far.models.kernels.tgi_conv import HAVE_TRITON
from reference_defs import definition_pair

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_TRITON), reason="needs CUDA and Triton")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture
def no_tf32():
    """Float32 matmuls and convolutions in full float32 for the test, as before it after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("size", ["vit_s", "vit_b"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)], ids=["fp32", "bf16"])
def test_benchmarked_far_equals_definition(size, dtype, tol, no_tf32, record_property):
    fast, ref = definition_pair(case_config(size, "far", drop_path=0.0), reference=dict(tgi_impl="conv3d"))
    with torch.no_grad():  # a non-zero classifier, so that every gradient is non-trivial
        fast.head.weight.normal_(0, 0.02)
        ref.head.weight.copy_(fast.head.weight)
    fast, ref = fast.cuda(), ref.cuda()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 224, 224, device="cuda")
    outs, grads = [], []
    for m in (fast, ref):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = m(x)
        out.float().square().mean().backward()
        outs.append(out.float())
        grads.append({k: p.grad for k, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert any(".tgi." in k for k in grads[1])
    # every parameter's gradient; one that is zero in the definition must be zero here too
    errs = {k: _rel(grads[0][k], grads[1][k]) for k in grads[1]}
    worst = max(errs, key=errs.get)
    out_err = _rel(outs[0], outs[1])
    # the errors go to the JUnit report (--junitxml), for the record of a GPU run
    record_property("out_rel_err", out_err)
    record_property("max_grad_rel_err", errs[worst])
    assert out_err < tol
    assert errs[worst] < tol, f"{worst}: relative error {errs[worst]:.2e}"
