"""Let timm import on a CPU-only torch when the only torchvision wheel is CUDA-linked.

Why: PyPI has no CPU build of torchvision. The CUDA-linked wheel's C++ ops fail to
load against CPU torch, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with ``RuntimeError: operator torchvision::nms
does not exist``. timm imports torchvision (for its transforms), so timm dies too.

What: import this module before timm. It imports torchvision normally; only if that
exact error occurs *and* torch is a CPU build, it retries with the meta-registration
module replaced by an empty one, so torchvision's pure-Python parts (transforms,
which is all this project uses) load. The compiled ops (nms, roi_align, …) stay
unavailable and raise if called. On a CUDA machine the first import succeeds and
nothing here is active. ``ACTIVE`` says whether the workaround was applied.
"""

from __future__ import annotations

import sys
import types

import torch

_SIGNATURE = "torchvision::nms does not exist"
ACTIVE = False


def _import_torchvision() -> None:
    global ACTIVE
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if _SIGNATURE not in str(err) or torch.version.cuda is not None:
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision  # noqa: F401,F811

        ACTIVE = True


_import_torchvision()
