"""Let timm import on a CPU-only torch when the only torchvision wheel is CUDA-linked.

Why: PyPI has no CPU build of torchvision. The CUDA-linked wheel's C++ ops fail to
load against CPU torch, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with ``RuntimeError: operator torchvision::nms
does not exist``. timm imports torchvision (for its transforms), so timm dies too.

What: an import hook for ``torchvision``. It loads torchvision normally; only if that
exact error occurs *and* torch is a CPU build, it loads it again with the
meta-registration module replaced by an empty one, so torchvision's pure-Python parts
(transforms, which is all this project uses) load. The compiled ops (nms, roi_align, …)
stay unavailable and raise if called. On a CUDA machine the first load succeeds and
nothing here is active. ``ACTIVE`` says whether the workaround was applied.

Two ways to install the hook; neither imports torch:

- ``import far.torchvision_compat`` (every module of far that uses timm does this
  before importing timm);
- ``python -m far.torchvision_compat --install`` writes ``far_torchvision_compat.pth``
  into the environment's site-packages: Python then installs the hook at startup, so a
  plain ``import timm`` works in every program of that environment. ``--uninstall``
  removes the file.
"""

from __future__ import annotations

import sys
import types
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module runs at every interpreter startup once installed: imports kept light
    from pathlib import Path

_SIGNATURE = "torchvision::nms does not exist"
ACTIVE = False

PTH_NAME = "far_torchvision_compat.pth"
# The line Python's site module runs at startup. It imports nothing heavy (this module
# only), and does nothing once far is uninstalled.
PTH_LINE = "import importlib.util as u; u.find_spec('far') and __import__('far.torchvision_compat')\n"

# What a module's namespace keeps between the two loads: the import system's attributes.
_IMPORT_ATTRS = {"__name__", "__loader__", "__package__", "__spec__", "__path__", "__file__", "__cached__",
                 "__builtins__"}


class _RetryLoader:
    """torchvision's own loader; after the CPU/CUDA mismatch it loads the package again
    without the meta registrations. Anything else is the wrapped loader's."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name: str):  # get_resource_reader, get_source, is_package, …
        return getattr(self.loader, name)

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        global ACTIVE
        try:
            self.loader.exec_module(module)
        except RuntimeError as err:
            import torch  # already loaded: torchvision's first import

            if _SIGNATURE not in str(err) or torch.version.cuda is not None:
                raise
            for name in [m for m in sys.modules if m.startswith("torchvision.")]:
                del sys.modules[name]
            for name in [a for a in vars(module) if a not in _IMPORT_ATTRS]:
                delattr(module, name)
            sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
            self.loader.exec_module(module)
            ACTIVE = True


class _TorchvisionFinder:
    """A ``sys.meta_path`` finder: finds ``torchvision`` as the finders after it do, and
    wraps its loader. (No importlib.abc base class: importing it costs 10 ms at startup.)"""

    def find_spec(self, name: str, path=None, target=None) -> ModuleSpec | None:
        if name != "torchvision":
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RetryLoader(spec.loader)
                return spec
        return None


def install_hook() -> None:
    """Put the torchvision hook first in ``sys.meta_path`` (once per process)."""
    # by name: ``python -m far.torchvision_compat`` defines the class a second time
    if not any(type(f).__name__ == _TorchvisionFinder.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())


def startup_hook_path(site_dir: str | Path | None = None) -> Path:
    """Where the ``.pth`` file goes: ``site_dir``, by default this interpreter's site-packages."""
    import sysconfig
    from pathlib import Path

    return Path(site_dir or sysconfig.get_paths()["purelib"]) / PTH_NAME


def install_startup_hook(site_dir: str | Path | None = None) -> Path:
    """Write the ``.pth`` file that installs the hook at interpreter startup; returns its path."""
    path = startup_hook_path(site_dir)
    path.write_text(PTH_LINE)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m far.torchvision_compat --install | --uninstall [--site-dir DIR]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m far.torchvision_compat",
                                description="Install the torchvision hook at Python startup (a .pth file).")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--install", action="store_true", help=f"write {PTH_NAME} into site-packages")
    action.add_argument("--uninstall", action="store_true", help=f"remove {PTH_NAME}")
    p.add_argument("--site-dir", help="the site-packages folder (default: this interpreter's)")
    args = p.parse_args(argv)
    if args.install:
        print(install_startup_hook(args.site_dir))
    else:
        path = startup_hook_path(args.site_dir)
        path.unlink(missing_ok=True)
        print(f"removed {path}")
    return 0


install_hook()

if __name__ == "__main__":
    sys.exit(main())
