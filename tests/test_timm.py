"""timm integration: the paper's models in timm's registry, and ``import timm`` on its own
(far.torchvision_compat's startup hook); import costs checked in fresh interpreters."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from far.models import model_config

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "far_vit_small_patch16_224": dict(backbone="vit_s", variant="far"),
    "far_vit_base_patch16_224": dict(backbone="vit_b", variant="far"),
    "far_baseline_vit_small_patch16_224": dict(backbone="vit_s", variant="baseline"),
    "far_baseline_vit_base_patch16_224": dict(backbone="vit_b", variant="baseline"),
}


def _python(code: str, *args: str, isolated: bool = False) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter from the repository root. ``isolated``: without the
    site module, so no .pth file of the environment runs (site-packages on sys.path by hand)."""
    if isolated:
        code = f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r}); " + code
    cmd = [sys.executable, *(["-S"] if isolated else []), "-c", code, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_timm_create_model_builds_the_registered_models():
    import far.models.timm_registry  # noqa: F401  (registers the names)
    import timm

    assert set(timm.list_models("far_*")) == set(NAMES)
    for name, spec in NAMES.items():
        with torch.device("meta"):  # the config is what is checked: no weights needed
            model = timm.create_model(name, pretrained=False, num_classes=400, drop_path_rate=0.2)
        assert model.cfg == model_config(spec, num_classes=400, drop_path=0.2), name
    small = timm.create_model("far_vit_small_patch16_224", img_size=32, num_frames=4, depth=1, num_classes=3)
    assert small(torch.randn(2, 3, 4, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="pretrained=True"):
        timm.create_model("far_vit_small_patch16_224", pretrained=True)
    with pytest.raises(ValueError, match="^colour: unknown key"):
        timm.create_model("far_vit_small_patch16_224", colour="red")


def test_far_and_its_configs_import_neither_torch_nor_timm():
    """The registry is opt-in (far.models.timm_registry): configs stay light."""
    out = _python("import sys, far, far.models; far.models.model_config(backbone='vit_s', variant='far'); "
                  "print(sorted({'torch', 'timm', 'torchvision'} & set(sys.modules)))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_timm_alone_with_the_startup_hook(tmp_path):
    """``python -m far.torchvision_compat --install`` writes a .pth file; with it, a plain
    ``import timm`` works, and the workaround acts exactly where timm fails without it
    (this CPU machine: CUDA-linked torchvision wheel; a CUDA machine: never)."""
    inst = subprocess.run([sys.executable, "-m", "far.torchvision_compat", "--install", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert inst.returncode == 0, inst.stderr
    assert (tmp_path / "far_torchvision_compat.pth").exists()

    plain = _python("import timm", isolated=True)
    hooked = _python("import site, sys; site.addsitedir(sys.argv[1]); "
                     "assert 'torch' not in sys.modules, 'the startup hook imported torch'; "
                     "import timm, torchvision.transforms, far.torchvision_compat as c; print(c.ACTIVE)",
                     str(tmp_path), isolated=True)
    assert hooked.returncode == 0, hooked.stderr
    needed = plain.returncode != 0
    if needed:
        assert "torchvision::nms does not exist" in plain.stderr, plain.stderr
    assert hooked.stdout.strip() == str(needed)
