"""``far data check``: do the user's prepared data reproduce a released fine-tuned model?

The most common reason a VideoMAE/MVD reproduction falls short is the copy of the data,
not the model: a K400 validation set of another size, an SSv2 conversion that changes the
frames, the other dataset's sampling, corrupt files. VideoMAE released fine-tuned models
with their test accuracy (``kind: finetuned`` entries of ``params/checkpoints.yaml``), so
testing one of them on the prepared validation list — the same multi-view test as
``far test`` (:func:`far.engine.evaluate.run_test`) — tells, before any training, whether
the data reproduce the published number.

The check writes a JSON record and a Markdown report: expected and measured top-1, the
difference, the validation-set size against the known sizes, the unreadable videos, and a
verdict (:func:`judge`) with the likely causes when the numbers disagree.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Validation-set sizes of the copies in circulation (videos in the annotation list).
KNOWN_VAL_SIZES: dict[str, tuple[tuple[int, str], ...]] = {
    "ssv2": ((24777, "the official Something-Something V2 validation.json"),),
    "k400": (
        (19796, "the copy MMAction distributed (240,436 train / 19,796 val; open-mmlab/mmaction#144)"),
        (19761, "the full copy of around 2019 that several repositories used (MCG-NJU/VideoMAE#94, "
                "youngwanLEE/VoV3D#3)"),
        (17747, "the list the Kinetics site serves now (MCG-NJU/VideoMAE#94)"),
    ),
}

DEFAULT_TOLERANCE = 1.0  # points: |measured - published| within this passes
DEFAULT_FAIL_BELOW = 3.0  # points: more than this below the published number fails
EXIT_FAIL = 3  # `far data check` exit status when the check fails (a pipeline stops there)


# ---- the validation-set size ------------------------------------------------------------
def check_set_size(dataset: str, annotated: int | None, listed: int,
                   known: tuple[tuple[int, str], ...] | None = None) -> dict[str, Any]:
    """Compare the validation set with the known sizes of ``dataset``'s copies.

    ``annotated``: entries in the copy's annotation file (report.json), ``listed``: videos
    in the prepared list (annotated minus missing and unusable). ``known`` overrides
    :data:`KNOWN_VAL_SIZES` (a synthetic dataset states its own size).
    """
    known = KNOWN_VAL_SIZES.get(dataset, ()) if known is None else known
    entries = [{"videos": n, "copy": what} for n, what in known]
    match = next((e for e in entries if e["videos"] == listed), None)
    annotated_match = next((e for e in entries if annotated is not None and e["videos"] == annotated), None)
    nearest = min(entries, key=lambda e: abs(e["videos"] - listed)) if entries else None
    if match:
        text = f"{listed:,} videos listed: matches {match['copy']} ({match['videos']:,})"
    elif annotated_match:
        text = (f"{listed:,} videos listed of {annotated:,} annotated: the annotation matches "
                f"{annotated_match['copy']}, but {annotated - listed:,} videos are missing or unusable")
    elif nearest:
        sizes = ", ".join(format(e["videos"], ",") for e in entries)
        text = (f"{listed:,} videos listed: matches none of the known sizes "
                f"({sizes}); nearest {nearest['videos']:,} "
                f"({nearest['copy']}), {listed - nearest['videos']:+,}")
    else:
        text = f"{listed:,} videos listed (no known size for {dataset!r})"
    return {"dataset": dataset, "annotated": annotated, "listed": listed, "known": entries,
            "matches": match["copy"] if match else None, "ok": match is not None, "text": text}


# ---- the verdict -------------------------------------------------------------------------------
@dataclass
class Verdict:
    """Pass, borderline or fail, the sentence the report leads with, and the likely causes."""

    status: str  # pass | borderline | fail
    text: str
    causes: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 unless the check failed (then :data:`EXIT_FAIL`): a pipeline stops before training."""
        return EXIT_FAIL if self.status == "fail" else 0


def sampling_error(top1: float, videos: int) -> float:
    """One binomial standard error of a top-1 (percent) measured on ``videos`` videos."""
    if videos < 1 or not math.isfinite(top1):
        return float("nan")
    p = min(max(top1 / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1 - p) / videos)


def judge(expected: float, measured: float, *, tolerance: float = DEFAULT_TOLERANCE,
          fail_below: float = DEFAULT_FAIL_BELOW, dataset: str = "", num_classes: int | None = None,
          set_size: Mapping[str, Any] | None = None, unreadable: int = 0, missing: int = 0,
          unusable: int = 0) -> Verdict:
    """The verdict on a measured top-1 against the published one (both in percent).

    pass: within ``tolerance`` points either way; fail: more than ``fail_below`` points
    below (or nothing measured); borderline: anything else (a little low, or higher than
    published by more than the tolerance). Causes are listed for anything but a pass,
    those with evidence in this check first.
    """
    if not 0 <= tolerance <= fail_below:
        raise ValueError(f"need 0 <= tolerance ({tolerance}) <= fail_below ({fail_below})")
    diff = measured - expected
    if not math.isfinite(measured):
        status = "fail"
        text = "do not train yet: no video could be tested (top-1 is undefined)"
    elif abs(diff) <= tolerance:
        status = "pass"
        text = (f"your data reproduce the released model within {tolerance:g} points "
                f"(measured {measured:.2f} vs published {expected:.2f}, {diff:+.2f})")
    elif diff < -fail_below:
        status = "fail"
        text = (f"do not train yet: the released model scores {measured:.2f} on your data, {-diff:.2f} points "
                f"below its published {expected:.2f} (more than {fail_below:g})")
    elif diff < 0:
        status = "borderline"
        text = (f"borderline: measured {measured:.2f} vs published {expected:.2f} ({diff:+.2f} points), outside "
                f"±{tolerance:g} but within {fail_below:g}; training may reproduce the paper a little low")
    else:
        status = "borderline"
        text = (f"borderline: measured {measured:.2f} is {diff:.2f} points above the published {expected:.2f}: "
                f"check that the validation list is not (part of) the training data, and its size")
    causes = [] if status == "pass" else likely_causes(
        status, dataset=dataset, measured=measured, num_classes=num_classes, set_size=set_size,
        unreadable=unreadable, missing=missing, unusable=unusable)
    return Verdict(status, text, causes)


def likely_causes(status: str, *, dataset: str, measured: float, num_classes: int | None,
                  set_size: Mapping[str, Any] | None, unreadable: int, missing: int, unusable: int) -> list[str]:
    """What most often explains the gap, evidence from this check first."""
    first: list[str] = []
    if num_classes and math.isfinite(measured) and measured < 2 * 100.0 / num_classes:
        first.append(f"near chance (chance is {100.0 / num_classes:.2f} %): the label mapping differs from the model's "
                     "class order (SSv2: the ids of labels.json; K400: the sorted class names), or the checkpoint "
                     "belongs to the other dataset")
    if set_size and not set_size.get("ok"):
        if dataset == "k400":
            first.append(f"the K400 copy: {set_size['text']}. VideoMAE tested on the copy it names in "
                         "MCG-NJU/VideoMAE#94; missing or other videos move the accuracy")
        else:
            first.append(f"the validation set: {set_size['text']}")
    if unreadable or missing or unusable:
        first.append(f"corrupt or missing files: {unreadable} unreadable at test time, {missing} missing and "
                     f"{unusable} unusable at preparation (report.json lists them)")
    general = []
    if dataset == "ssv2":
        general.append("the SSv2 conversion (MCG-NJU/VideoMAE#12, #36, #62): videos re-encoded or frames extracted "
                       "at another frame rate or size than the model was tested on change the 2x3 segment "
                       "sampling; test on the original .webm files")
    general.append("the test protocol (MCG-NJU/VideoMAE#6: a missing --data_set flag, i.e. the other dataset's "
                   "sampling, cost 1-2.5 points): data.sampling (segment for SSv2, dense with stride 4 for K400), "
                   "clips x crops (2x3 SSv2, 5x3 K400), short_side 224")
    if dataset == "k400":
        general.append("re-encoding: --reencode-short-side other than the copy the model was tested on "
                       "(VideoMAE used short side 320)")
    return first + general


# ---- running the check -------------------------------------------------------------------------
@dataclass
class Target:
    """The released model to test and the numbers it was published with."""

    name: str  # registry name, or the file name for a path
    path: Path
    fmt: str | None  # the loader's format, None: detected from the keys
    dataset: str
    top1: float
    top5: float | None
    clips: int
    crops: int
    source: str
    model: dict[str, Any]  # far.models.model_config mapping (backbone, overrides)


def registry_target(name: str, registry_path: str | Path, dest: str | Path, **fetch_kw: Any) -> Target:
    """A ``kind: finetuned`` registry entry, fetched (or verified) like ``far fetch NAME``."""
    from far.fetch import RegistryError, fetch_checkpoint, load_registry

    registry = load_registry(registry_path)
    if name not in registry:
        raise RegistryError("checkpoints", f"unknown checkpoint {name!r} (see `far fetch --list`)", str(registry_path))
    spec = registry[name]
    if spec.kind != "finetuned" or spec.published is None:
        fine = ", ".join(n for n, s in registry.items() if s.kind == "finetuned")
        raise RegistryError("checkpoints", f"{name!r} is a {spec.kind} checkpoint with no published test "
                            f"accuracy; give a fine-tuned entry ({fine})", str(registry_path))
    path = fetch_checkpoint(name, registry, dest, **fetch_kw)
    pub = spec.published
    return Target(name=name, path=Path(path), fmt=spec.format, dataset=pub.dataset, top1=pub.top1, top5=pub.top5,
                  clips=pub.clips, crops=pub.crops, source=pub.source, model={"backbone": spec.backbone})


def read_prepared(prepared: str | Path) -> dict[str, Any]:
    """The prepared dataset's report.json (written by ``far data prepare``), with the list paths."""
    from far.layout import PreparedFiles

    files = PreparedFiles(str(prepared))
    for f in (files.val, files.report):
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: not found; run `far data prepare --out {prepared}` first")
    report = json.loads(Path(files.report).read_text())
    return {"val_list": files.val, "dataset": report["dataset"], "video_root": report["video_root"],
            "num_classes": int(report["num_classes"]), "counts": report.get("counts", {}).get("val", {})}


def build_run(target: Target, prepared: Mapping[str, Any], *, data: Mapping[str, Any] | None = None,
              eval_micro: int = 8, num_workers: int = 2) -> Any:
    """The run config ``far test`` reads: the released model (baseline ViT, the prepared
    number of classes) on the prepared val list with the published views."""
    from far.engine.config import run_config
    from far.models import model_config

    model = {"variant": "baseline", "drop_path": 0.0} | dict(target.model) | {"num_classes": prepared["num_classes"]}
    mc = model_config(model)
    from far.data.config import DataConfig

    sampling = DataConfig.preset(target.dataset).sampling  # the reference's sampling of that dataset
    data_cfg = {"dataset": target.dataset, "sampling": sampling, "val_list": str(prepared["val_list"]),
                "root": str(prepared["video_root"]), "num_classes": prepared["num_classes"],
                "num_frames": mc.num_frames, "input_size": mc.img_size} | dict(data or {})
    return run_config({
        "seed": 0, "model": model, "data": data_cfg,
        "batch": {"derive": "accumulation", "total": 2, "micro": 2, "eval_micro": eval_micro,
                  "num_workers": num_workers},
        "test": {"clips": target.clips, "crops": target.crops},
        "tracking": {"enabled": False},
    })


def run_check(target: Target, prepared_dir: str | Path, out: str | Path, *, data: Mapping[str, Any] | None = None,
              tolerance: float = DEFAULT_TOLERANCE, fail_below: float = DEFAULT_FAIL_BELOW,
              known_sizes: tuple[tuple[int, str], ...] | None = None, max_videos: int | None = None,
              eval_micro: int = 8, num_workers: int = 2, trust: bool = False,
              progress: bool | None = None) -> dict[str, Any]:
    """Test ``target`` on the prepared val list (``far test``'s code path, outputs in
    ``out/test``) and return the check's record (see :func:`write_report`)."""
    from far.engine.evaluate import run_test

    prepared = read_prepared(prepared_dir)
    if prepared["dataset"] != target.dataset:
        raise ValueError(f"{target.name} was fine-tuned and tested on {target.dataset}, but {prepared_dir} holds "
                         f"{prepared['dataset']}")
    run = build_run(target, prepared, data=data, eval_micro=eval_micro, num_workers=num_workers)
    t0 = time.perf_counter()
    # far test loads what fits; a released model must be complete (its own head).
    metrics = run_test(run, target.path, Path(out) / "test", progress=progress, max_videos=max_videos,
                       trust_checkpoint=trust, complete=True, fmt=target.fmt)
    loaded = metrics["load_report"]
    counts = prepared["counts"]
    # The whole list's size, also when --max-videos tested only its head.
    listed = int(counts.get("listed", metrics["expected_videos"]))
    size = check_set_size(target.dataset, counts.get("annotated"), listed, known_sizes)
    unreadable = metrics.get("unreadable", [])
    missing, unusable = int(counts.get("missing", 0)), int(counts.get("unusable", 0))
    verdict = judge(target.top1, metrics["top1"], tolerance=tolerance, fail_below=fail_below,
                    dataset=target.dataset, num_classes=prepared["num_classes"], set_size=size,
                    unreadable=len(unreadable), missing=missing, unusable=unusable)
    diff5 = None if target.top5 is None else metrics["top5"] - target.top5
    return {
        "checkpoint": {"name": target.name, "path": str(target.path), "format": loaded["format"],
                       "published_in": target.source, "loaded_tensors": loaded["loaded_tensors"]},
        "dataset": target.dataset,
        "prepared": str(prepared_dir),
        "views": f"{target.clips}x{target.crops}",
        "expected": {"top1": target.top1, "top5": target.top5},
        "measured": {"top1": metrics["top1"], "top5": metrics["top5"], "videos": metrics["videos"],
                     "expected_videos": metrics["expected_videos"],
                     "sampling_error_top1": sampling_error(metrics["top1"], metrics["videos"])},
        "difference": {"top1": metrics["top1"] - target.top1, "top5": diff5},
        "set_size": size,
        "unreadable": unreadable,
        "preparation": {"missing": missing, "unusable": unusable},
        "thresholds": {"tolerance": tolerance, "fail_below": fail_below},
        "verdict": asdict(verdict),
        "max_videos": max_videos,
        "wall_s": time.perf_counter() - t0,
    }


# ---- a stand-in release ---------------------------------------------------------------------
def export_stand_in(run_dir: str | Path, name: str, *, method: str, backbone: str, pretrain_dataset: str,
                    checkpoint: str | Path, registry: str | Path) -> dict[str, Any]:
    """Export a finished fine-tune as if it were a released model: its weights in the official
    fine-tuned layout (``{"module": state_dict}``, as VideoMAE released them) at ``checkpoint``,
    and a registry file (the schema of ``params/checkpoints.yaml``) at ``registry`` with one
    ``kind: finetuned`` entry whose published numbers are the run's own multi-view test and
    whose source is the exported file. The embedded default checks this stand-in the way
    paper mode checks VideoMAE's releases (nothing was released for synthetic data).
    Returns the entry."""
    import hashlib

    import yaml

    from far.checkpoints import atomic_save, safe_torch_load
    from far.fetch import load_registry
    from far.layout import RunFiles

    files = RunFiles(str(run_dir))
    metrics = json.loads(Path(files.test_metrics).read_text())
    saved = safe_torch_load(files.model)
    state = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{files.model}: not a far train model file (no 'model' state dict)")
    checkpoint, registry = Path(checkpoint), Path(registry)
    atomic_save({"module": state}, checkpoint)
    data = checkpoint.read_bytes()
    top5 = metrics.get("top5")
    entry = {
        "name": name, "kind": "finetuned", "method": method, "backbone": backbone,
        "pretrain_dataset": pretrain_dataset, "format": "finetuned", "filename": checkpoint.name,
        "sources": [{"kind": "file", "path": str(checkpoint)}],
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
        "description": f"a stand-in: far's own fine-tune {Path(run_dir).name}, exported by far data stand-in",
        "published": {"dataset": _dataset_of(files), "top1": float(metrics["top1"]),
                      "top5": None if top5 is None else float(top5), "clips": int(metrics["clips"]),
                      "crops": int(metrics["crops"]), "source": f"its own test, {files.test_metrics}"},
    }
    registry.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry.with_name(f".{registry.name}.tmp")
    tmp.write_text(yaml.safe_dump({"version": 1, "checkpoints": [entry]}, sort_keys=False))
    load_registry(tmp)  # what is written is a valid registry
    tmp.replace(registry)
    return entry


def _dataset_of(files: Any) -> str:
    """The dataset of a run folder, from its resolved config."""
    import yaml

    return yaml.safe_load(Path(files.run_config).read_text())["data"]["dataset"]


# ---- the report ----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.2f}"


def render_markdown(records: list[Mapping[str, Any]]) -> str:
    """reports/data_check.md: one section per checked model, verdict first."""
    lines = ["# Data check: released fine-tuned models on your validation data", "",
             "Each released model is tested on the prepared validation list with the multi-view protocol it "
             "was published with (`far data check`, the code path of `far test`). When your data reproduce "
             "its published top-1, the data are not what will hold a reproduction back.", ""]
    for r in records:
        v, m, e, d = r["verdict"], r["measured"], r["expected"], r["difference"]
        lines += [f"## {r['checkpoint']['name']} on {r['dataset']} ({r['prepared']})", "",
                  f"**{v['status'].upper()}: {v['text']}**", "",
                  "| | top-1 | top-5 |", "|---|---:|---:|",
                  f"| published ({r['checkpoint']['published_in']}) | {_pct(e['top1'])} | {_pct(e['top5'])} |",
                  f"| measured here, {r['views']} views, {m['videos']:,} videos | {_pct(m['top1'])} "
                  f"(± {_pct(m['sampling_error_top1'])} s.e.) | {_pct(m['top5'])} |",
                  f"| difference | {d['top1']:+.2f} | {'–' if d['top5'] is None else format(d['top5'], '+.2f')} |", "",
                  f"- Validation set: {r['set_size']['text']}.",
                  f"- Thresholds: pass within ±{r['thresholds']['tolerance']:g} points, fail more than "
                  f"{r['thresholds']['fail_below']:g} below.",
                  f"- Checkpoint: `{r['checkpoint']['path']}` ({r['checkpoint']['format']}, "
                  f"{r['checkpoint']['loaded_tensors']} tensors, complete)."]
        if r.get("max_videos"):
            lines.append(f"- Only the first {r['max_videos']} videos of the list were tested (--max-videos).")
        bad = r["unreadable"]
        lines.append(f"- Unreadable videos at test time: {len(bad)}" + (":" if bad else "."))
        lines += [f"  - `{u['path']}`: {u['reason']}" for u in bad[:50]]
        if len(bad) > 50:
            lines.append(f"  - … {len(bad) - 50} more (data_check.json lists all)")
        if v["causes"]:
            lines += ["", "Likely causes, most likely first:", ""] + [f"{i}. {c}" for i, c in enumerate(v["causes"], 1)]
        lines.append("")
    return "\n".join(lines)


def read_records(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every check of the JSON files ``far data check`` wrote (``{"checks": [...]}``), in order."""
    out = []
    for path in paths:
        try:
            checks = json.loads(Path(path).read_text())["checks"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a far data check record ({type(err).__name__}: {err})") from None
        out.extend(checks)
    return out


def write_report(records: list[Mapping[str, Any]], report: str | Path) -> tuple[Path, Path]:
    """Write ``report`` (Markdown) and the same stem with ``.json`` (every record), atomically."""
    md = Path(report)
    js = md.with_suffix(".json")
    md.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((js, json.dumps({"checks": list(records)}, indent=2, default=float) + "\n"),
                       (md, render_markdown(records))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return md, js
