"""Load pre-trained and fine-tuned weights into the FAR models: complete or refused.

Formats, detected from the keys:

- ``videomae_pretrain``: VideoMAE pre-training (``{"model": ...}``, ``encoder.``-prefixed
  encoder, decoder parts to drop);
- ``mvd_pretrain``: MVD pre-training (``{"model": ...}``, un-prefixed encoder,
  ``decoder_img.*``/``decoder_vid.*`` and friends to drop, a frozen ``pos_embed``);
- ``hf_videomae``: Hugging Face ``VideoMAEFor{PreTraining,VideoClassification}`` state dicts;
- ``finetuned``: fine-tuned models (this project's, or VideoMAE/MVD's DeepSpeed
  ``{"module": ...}`` saves): every key must match, head included.

Every key of the checkpoint is either loaded or dropped for a stated reason; every
parameter of the model is either loaded or is one of the modules fine-tuning adds
(FAR's token-group interaction, ``fc_norm``, ``head``). Anything else — a truncated
file, a renamed key, a shape mismatch — raises :class:`CheckpointError` naming the keys.

Every ``torch.load`` of the project goes through :func:`safe_torch_load`: Python's full
unpickler runs whatever code a file names, so files are loaded with ``weights_only=True``
and a short allow-list, and a file that needs more is refused unless the user passes
``--trust-checkpoint`` (see docs/checkpoints.md).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

log = logging.getLogger(__name__)

FORMATS = ("videomae_pretrain", "mvd_pretrain", "hf_videomae", "finetuned")
FAR_FORMAT_TAG = "far-finetuned-v1"

# Checkpoint keys that are never part of the fine-tuning model, with the reason.
_DROP_RULES: dict[str, list[tuple[str, str]]] = {
    "videomae_pretrain": [
        (r"^decoder\.", "pre-training decoder"),
        (r"^encoder_to_decoder\.", "pre-training decoder"),
        (r"^mask_token$", "pre-training mask token"),
        (r"^pos_embed$", "decoder position table"),
        (r"^norm\.", "encoder final norm (fine-tuning pools, then applies fc_norm)"),
    ],
    "mvd_pretrain": [
        (r"^decoder_(img|vid)\.", "MVD decoder"),
        (r"^(down_img|down_vid)", "MVD decoder projection"),
        (r"^encoder_to_decoder", "MVD decoder projection"),
        (r"^mask_token(_img|_vid)?$", "MVD mask token"),
        (r"^pos_embed(_img|_vid)$", "MVD decoder position table"),
        (r"^pos_embed$", "fixed 3-D sin-cos table (rebuilt by the model)"),
        (r"^(teacher|image_teacher|video_teacher)", "MVD teacher"),
        (r"^norm\.", "encoder final norm (fine-tuning pools, then applies fc_norm)"),
    ],
    "hf_videomae": [
        (r"^decoder\.", "pre-training decoder"),
        (r"^encoder_to_decoder\.", "pre-training decoder"),
        (r"^mask_token$", "pre-training mask token"),
        (r"^norm\.", "encoder final norm (fine-tuning pools, then applies fc_norm)"),
    ],
    "finetuned": [],
}

# Model parameters that a checkpoint of each format is not expected to hold.
_NEW_IN_FINETUNING = [r"^fc_norm\.", r"^head\.", r"^blocks\.\d+\.tgi\."]
_EXPECTED_MISSING = {
    "videomae_pretrain": _NEW_IN_FINETUNING,
    "mvd_pretrain": _NEW_IN_FINETUNING,
    "hf_videomae": _NEW_IN_FINETUNING,
    "finetuned": [],
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded completely into the model."""


class UntrustedCheckpointError(CheckpointError):
    """A file that only Python's full unpickler (which can run code from it) could load."""


TRUST_OPTION = "--trust-checkpoint"

# Non-tensor classes the weights-only unpickler may rebuild (it sets their attributes and
# calls nothing from the file). argparse.Namespace: the ``args`` entry of the official
# VideoMAE/MVD pre-training and fine-tuning saves. Callers add what their own files hold.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: shown to the user and logged with the run."""

    path: str
    format: str
    loaded: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    pos_embed: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"checkpoint {self.path} ({self.format}): loaded {len(self.loaded)} tensors, "
            f"dropped {len(self.dropped)}, newly initialised {len(self.initialised)}; position embedding {self.pos_embed}",
        ]
        reasons: dict[str, int] = {}
        for r in self.dropped.values():
            reasons[r] = reasons.get(r, 0) + 1
        lines += [f"  dropped {n} x {r}" for r, n in sorted(reasons.items())]
        if self.initialised:
            lines.append("  initialised: " + _abbrev(self.initialised))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dict(path=self.path, format=self.format, loaded=len(self.loaded), dropped=self.dropped,
                    initialised=self.initialised, pos_embed=self.pos_embed, notes=self.notes)


def _abbrev(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


# ---- reading --------------------------------------------------------------------
def _global_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _unsafe_globals(path: Path, err: Exception, allowed: Iterable[Any]) -> list[str]:
    """The globals a refused file names, for the message (all of them where torch can list them)."""
    ok = {_global_name(g) for g in allowed}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) pickles: the refusal names the first one
        found = re.findall(r"GLOBAL ([\w.]+)", str(err))
    return [g for g in dict.fromkeys(found) if g not in ok]


def safe_torch_load(path: str | Path, *, trust: bool = False, extra_globals: Iterable[Any] = (),
                    mmap: bool = False) -> Any:
    """``torch.load`` a file without running code from it (the one loader of the project).

    Loads with ``weights_only=True`` and :data:`SAFE_GLOBALS` plus ``extra_globals``. A file
    that needs anything else can only be read by Python's full unpickler, which executes
    what the file names: it raises :class:`UntrustedCheckpointError` naming the file, the
    globals and ``--trust-checkpoint``; with ``trust=True`` it is loaded that way and a
    WARNING is logged. ``mmap`` maps a zip-format file instead of reading it into memory.
    Other failures (truncated, corrupt) raise :class:`CheckpointError`.
    """
    path = Path(path)
    allowed = (*SAFE_GLOBALS, *extra_globals)
    mmap = mmap and zipfile.is_zipfile(path)  # torch maps only its zip format
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from err
        names = ", ".join(_unsafe_globals(path, err, allowed)) or "objects outside the allow-list"
        if not trust:
            raise UntrustedCheckpointError(
                f"{path}: refused: it holds Python objects ({names}) that only the full unpickler can "
                f"load, and that unpickler runs any code the file names. If you trust where this file "
                f"came from, pass {TRUST_OPTION} (far train, far test, far pretrain)."
            ) from None
        log.warning("%s: loading with the full unpickler because %s was given (it holds %s); "
                    "any code in it runs now", path, TRUST_OPTION, names)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as full_err:
            raise CheckpointError(f"{path}: unreadable checkpoint ({full_err})") from full_err
    except Exception as err:  # truncated zip, bad magic, a missing storage record, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from err


def read_checkpoint(path: str | Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict, metadata) from a ``.pth``/``.bin``/``.pt`` or ``.safetensors`` file.

    Pickle-based files go through :func:`safe_torch_load` (``trust``: see there).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except Exception as err:  # truncated/corrupt file
            raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from err
    return split_container(safe_torch_load(path, trust=trust), str(path))


def split_container(obj: Any, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the state dict inside the usual wrappers (``model``, ``module``, ``state_dict``)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a dict, found {type(obj).__name__}")
    meta: dict[str, Any] = {}
    for key in ("model", "module", "state_dict", "model_state"):
        if key in obj and isinstance(obj[key], Mapping):
            meta = {k: v for k, v in obj.items() if k != key}
            meta["container"] = key
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{where}: no tensors found (top-level keys: {_abbrev(list(obj))})")
    if all(k.startswith("module.") for k in state):  # DistributedDataParallel prefix
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, meta


def detect_format(state: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str:
    """Name the format of a state dict from its keys (see module doc)."""
    meta = meta or {}
    keys = list(state)
    if meta.get("format") == FAR_FORMAT_TAG:
        return "finetuned"
    if any(k.startswith("videomae.") for k in keys):
        return "hf_videomae"
    if any(k.startswith("encoder.blocks.") for k in keys):
        return "videomae_pretrain"
    if any(re.match(r"^(decoder_img|decoder_vid|down_img|down_vid|mask_token_img|mask_token_vid)", k) for k in keys):
        return "mvd_pretrain"
    if any(k.startswith("blocks.") for k in keys):
        if any(k.startswith("head.") for k in keys):
            return "finetuned"
        if "pos_embed" in keys:  # an MVD encoder saved without its decoders
            return "mvd_pretrain"
    raise CheckpointError(f"unrecognised checkpoint format; keys: {_abbrev(keys)}")


# ---- name mapping -----------------------------------------------------------------
_HF_LAYER = re.compile(r"^videomae\.encoder\.layer\.(\d+)\.(.+)$")
_HF_BLOCK_NAMES = {
    "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.v_bias": "attn.v_bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
}
_HF_TOP_NAMES = {
    "videomae.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "videomae.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "videomae.layernorm.weight": "norm.weight",
    "videomae.layernorm.bias": "norm.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def _from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _HF_LAYER.match(k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            part = re.match(r"^attention\.attention\.(query|key|value)\.weight$", rest)
            if part:
                qkv.setdefault(i, {})[part.group(1)] = v
            elif rest in _HF_BLOCK_NAMES:
                out[f"blocks.{i}.{_HF_BLOCK_NAMES[rest]}"] = v
            else:
                out[k] = v  # left unmapped: reported as unexpected
        else:
            out[_HF_TOP_NAMES.get(k, k)] = v
    for i, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"layer {i}: attention has {sorted(parts)} but needs query, key and value")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def to_model_names(state: Mapping[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Rename a state dict of format ``fmt`` to the model's parameter names."""
    if fmt == "videomae_pretrain":
        return {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    if fmt == "hf_videomae":
        return _from_hf(state)
    if fmt in ("mvd_pretrain", "finetuned"):
        return dict(state)
    raise CheckpointError(f"unknown checkpoint format {fmt!r}")


# ---- writing (used by tests and by offline pre-training) ---------------------------
def encoder_state(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pre-trainable encoder part of a model state dict (no FAR modules, no head)."""
    skip = [re.compile(p) for p in _NEW_IN_FINETUNING]
    return {k: v for k, v in model_state.items() if not any(p.match(k) for p in skip)}


def to_format(encoder: Mapping[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Encoder weights (model names) renamed into the official layout of ``fmt``."""
    if fmt == "videomae_pretrain":
        return {f"encoder.{k}": v for k, v in encoder.items()}
    if fmt == "mvd_pretrain":
        return dict(encoder)
    if fmt == "hf_videomae":
        inv_block = {v: k for k, v in _HF_BLOCK_NAMES.items()}
        inv_top = {v: k for k, v in _HF_TOP_NAMES.items()}
        out = {}
        for k, v in encoder.items():
            m = re.match(r"^blocks\.(\d+)\.(.+)$", k)
            if m and m.group(2) == "attn.qkv.weight":
                q, kk, vv = v.chunk(3, 0)
                base = f"videomae.encoder.layer.{m.group(1)}.attention.attention"
                out |= {f"{base}.query.weight": q, f"{base}.key.weight": kk, f"{base}.value.weight": vv}
            elif m:
                out[f"videomae.encoder.layer.{m.group(1)}.{inv_block[m.group(2)]}"] = v
            else:
                out[inv_top[k]] = v
        return out
    raise CheckpointError(f"cannot write format {fmt!r}")


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (most often: the disk is full); nothing complete was lost."""


# Below this much free space a failed write is called a full disk: torch's zip writer
# reports ENOSPC only as "[enforce fail at inline_container.cc] . unexpected pos ...".
_NEARLY_FULL = 64 * 2**20


@contextlib.contextmanager
def explained_write(path: str | Path) -> Iterator[None]:
    """Re-raise a failed write under ``path`` as :class:`CheckpointWriteError` naming the
    path, the free space on its file system and, when it is (nearly) full, that cause."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, CheckpointError):
            raise
        where = Path(path)
        probe = next((p for p in (where, *where.parents) if p.exists()), Path("."))
        usage = shutil.disk_usage(probe)
        full = getattr(err, "errno", None) == errno.ENOSPC or usage.free < _NEARLY_FULL
        cause = "no space left on device" if full else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise CheckpointWriteError(
            f"writing {where} failed: {cause} ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB "
            f"on its file system). The last complete checkpoint is intact: free space, then run the same command "
            f"again to resume.") from err


def atomic_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary name, then rename: a half-written file never has the
    final name. A failed write (full disk) removes the partial file and raises
    :class:`CheckpointWriteError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with explained_write(path):
        try:
            torch.save(payload, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a partial file only takes the space a retry needs
            raise
    tmp.replace(path)
    return path


def save_finetuned(model: torch.nn.Module, path: str | Path, **meta: Any) -> None:
    """Save this project's fine-tuned format: weights + the model config that made them."""
    atomic_save({"model": model.state_dict(), "format": FAR_FORMAT_TAG, "far_config": model.cfg.to_dict(), **meta},
                path)


# ---- loading ---------------------------------------------------------------------
def _pos_embed_flavour(fmt: str, meta: Mapping[str, Any]) -> str | None:
    if fmt == "mvd_pretrain":
        return "mvd"
    if fmt in ("videomae_pretrain", "hf_videomae"):
        return "videomae"
    cfg = meta.get("far_config")
    return cfg.get("pos_embed") if isinstance(cfg, Mapping) else None


def load_checkpoint(model: torch.nn.Module, source: str | Path | Mapping[str, Any], *, fmt: str | None = None,
                    trust: bool = False, complete: bool = False) -> LoadReport:
    """Load ``source`` (a path or an in-memory checkpoint dict) into ``model``, completely.

    Raises :class:`CheckpointError` naming the keys when anything is missing, unexpected
    or of the wrong shape. Switches the model's fixed position embedding to the
    checkpoint's flavour (MVD 3-D or VideoMAE 1-D) and says so in the report. A file that
    needs the full unpickler is refused unless ``trust`` (``--trust-checkpoint``).
    ``complete``: every parameter of the model must come from the checkpoint, the
    fine-tuning modules (``fc_norm``, ``head``) included, whatever the format: a released
    fine-tuned model (official ``{"module": ...}`` or Hugging Face
    ``VideoMAEForVideoClassification``) tested as it is, where a fresh head would go unnoticed.
    """
    if isinstance(source, Mapping):
        where = "<in-memory checkpoint>"
        state, meta = split_container(source, where)
    else:
        where = str(source)
        state, meta = read_checkpoint(source, trust=trust)
    fmt = fmt or detect_format(state, meta)
    if fmt not in FORMATS:
        raise CheckpointError(f"{where}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    report = LoadReport(path=where, format=fmt)
    mapped = to_model_names(state, fmt)

    drop_rules = [(re.compile(p), why) for p, why in _DROP_RULES[fmt]]
    model_state = model.state_dict()
    keep: dict[str, torch.Tensor] = {}
    for k, v in mapped.items():
        why = next((w for p, w in drop_rules if p.match(k)), None)
        if why and k not in model_state:
            report.dropped[k] = why
        else:
            keep[k] = v

    expected = [] if complete else [re.compile(p) for p in _EXPECTED_MISSING[fmt]]
    missing = [k for k in model_state if k not in keep]
    bad_missing = [k for k in missing if not any(p.match(k) for p in expected)]
    unexpected = [k for k in keep if k not in model_state]
    problems = []
    if bad_missing:
        problems.append(f"missing {len(bad_missing)} keys the model needs: {_abbrev(bad_missing)}"
                        + (" (a complete model is required: a fine-tuned checkpoint with its head)" if complete else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_abbrev(unexpected)}")
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
              for k, v in keep.items() if k in model_state and v.shape != model_state[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:8]) + (" …" if len(shapes) > 8 else ""))
    if problems:
        raise CheckpointError(f"{where} ({fmt}) does not fit the model:\n  " + "\n  ".join(problems))

    model.load_state_dict(keep, strict=False)
    report.loaded = sorted(keep)
    report.initialised = missing

    flavour = _pos_embed_flavour(fmt, meta)
    if flavour and hasattr(model, "set_pos_embed"):
        if model.cfg.pos_embed != flavour:
            report.notes.append(f"position embedding switched {model.cfg.pos_embed} -> {flavour} to match the checkpoint")
            model.set_pos_embed(flavour)
        if fmt == "mvd_pretrain" and "pos_embed" in state:
            saved = state["pos_embed"].reshape(-1, state["pos_embed"].shape[-1]).float()
            ours = model.pos_embed.detach().cpu()
            if model.cfg.token_order == "grouped":
                ours = ours[model.layout.inv_perm]
            if saved.shape == ours.shape:
                diff = (saved - ours).abs().max().item()
                report.notes.append(f"checkpoint pos_embed vs rebuilt 3-D sin-cos table: max abs diff {diff:.2e}")
    report.pos_embed = model.cfg.pos_embed if hasattr(model, "cfg") else "n/a"
    log.info(report.summary())
    return report
