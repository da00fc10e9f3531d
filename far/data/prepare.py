"""``far data prepare``: official SSv2/K400 download -> checked ``path label`` lists.

Writes into ``out``:

* ``train.csv``, ``val.csv``: ``path label`` per line, space separated, no header (the
  reference format). Paths are RELATIVE to ``video_root`` (recorded in report.json):
  the raw ``--root``, or ``out/videos`` after re-encoding. Relative paths keep the
  lists valid when the data folder moves; pass ``video_root`` as ``DataConfig.root``.
* ``classes.json``: class name -> index.
* ``report.json``: counts per split, missing files (with a note when a file of the
  same name has another extension), and every unusable video with its reason and
  category (empty / too_small / unreadable / undecodable / truncated, checked by
  opening it with decord, decoding its first and last frame and comparing its length
  with the container header). Unusable videos are left out of the lists. The paths of
  missing and unusable videos are relative to ``root`` (the raw folder). Fields are
  described in docs/data.md.

Checking (and re-encoding) runs in a process pool. Nothing time-dependent is written
(reasons are freed of decord's time of day, see far/data/video.py), so the same input
gives byte-identical outputs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from far.data.layouts import Layout, read_layout
from far.data.video import CATEGORIES, CorruptVideo, error_text, probe

log = logging.getLogger(__name__)

# (path, frame count or None, reason or None, category or None)
Checked = tuple[str, int | None, str | None, str | None]


def check_video(path: str) -> Checked:
    """(path, frame count, None, None) if usable, else (path, None, reason, category)."""
    try:
        return path, probe(path), None, None
    except CorruptVideo as err:
        return path, None, err.reason, err.category
    except Exception as err:  # anything else decord/FFmpeg throws is also "undecodable"
        return path, None, f"undecodable: {error_text(err, path)}", "undecodable"


def _reencode_job(job: tuple[str, str, int]) -> Checked:
    from far.data.encode import reencode

    src, dst, short_side = job
    try:
        reencode(src, dst, short_side)
        return src, 1, None, None
    except Exception as err:
        return src, None, f"re-encode failed: {error_text(err, src)}", "undecodable"


def _run_pool(fn: Callable[[Any], Checked], jobs: list[Any], workers: int, desc: str,
              progress: bool) -> list[Checked]:
    """Map ``fn`` over ``jobs`` (in order) with a tqdm bar; a crashing decoder is isolated."""
    from tqdm import tqdm

    if workers <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    results: list[Checked] = []
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for r in tqdm(pool.map(fn, jobs, chunksize=4), total=len(jobs), desc=desc, disable=not progress):
                results.append(r)
    except BrokenProcessPool:
        # A decoder crashed a worker (segfault on a malformed file). Redo the rest one
        # file per process so the culprit is named instead of aborting everything.
        log.warning("%s: a worker process died; checking the remaining %d files one by one", desc,
                    len(jobs) - len(results))
        for j in tqdm(jobs[len(results):], desc=f"{desc} (isolated)", disable=not progress):
            try:
                with ProcessPoolExecutor(max_workers=1) as solo:
                    results.append(solo.submit(fn, j).result())
            except BrokenProcessPool:
                path = j[0] if isinstance(j, tuple) else j
                results.append((str(path), None, "decoder crashed the process", "undecodable"))
    return results


def _relative(path: str | Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _missing_entry(layout: Layout, path: Path) -> dict[str, str]:
    entry = {"path": _relative(path, layout.root), "reason": "no such file"}
    other = layout.other_extension.get(path)
    if other is not None:
        entry["reason"] = (f"no such file, but {_relative(other, layout.root)} exists with another extension; "
                           f"the {layout.dataset} layout expects {path.suffix}: convert or rename it (decord "
                           f"detects the container from the content, not the name)")
    return entry


def prepare(dataset: str, root: str | Path, out: str | Path, reencode_short_side: int | None = None,
            workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Check (and optionally re-encode) a raw dataset and write lists + report into ``out``.

    Raises :class:`far.data.layouts.MissingRawData` when the layout is not there.
    Returns the report dict (as written to ``out/report.json``).
    """
    layout: Layout = read_layout(dataset, root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    class_index = {name: i for i, name in enumerate(layout.classes)}
    all_paths = [str(p) for split in ("train", "val") for p, _ in layout.entries[split]]
    checked = {p: (n, reason, cat) for p, n, reason, cat in _run_pool(check_video, all_paths, workers, "check", progress)}

    video_root = layout.root.resolve()
    targets: dict[str, Path] = {p: Path(p) for p in all_paths}
    if reencode_short_side:
        video_root = (out / "videos").resolve()
        jobs = []
        for p in all_paths:
            rel = Path(os.path.relpath(p, layout.root)).with_suffix(".mp4")
            targets[p] = video_root / rel
            if checked[p][1] is None:
                jobs.append((p, str(targets[p]), int(reencode_short_side)))
        for p, ok, reason, cat in _run_pool(_reencode_job, jobs, workers, "re-encode", progress):
            if ok is None:
                checked[p] = (None, reason, cat)

    # root and video_root as given (relative to the working directory when given so): the
    # report is versioned data, and a clone elsewhere must hash to the same bytes.
    report: dict[str, Any] = {
        "dataset": dataset, "root": str(Path(root)),
        "video_root": str(out / "videos") if reencode_short_side else str(Path(root)),
        "paths": "relative to video_root", "report_paths": "missing and unusable paths are relative to root",
        "reencode_short_side": reencode_short_side, "num_classes": len(layout.classes), "counts": {},
        "missing": {split: [_missing_entry(layout, p) for p in paths] for split, paths in layout.missing.items()},
        "unusable": {},
    }
    for split, fname in (("train", "train.csv"), ("val", "val.csv")):
        lines, bad = [], []
        by_category = dict.fromkeys(CATEGORIES[1:], 0)
        for path, name in layout.entries[split]:
            n, reason, category = checked[str(path)]
            if reason is not None:
                bad.append({"path": _relative(path, layout.root), "category": category, "reason": reason})
                by_category[category] += 1
                continue
            lines.append(f"{_relative(targets[str(path)], video_root)} {class_index[name]}")
        (out / fname).write_text("".join(line + "\n" for line in lines))
        report["unusable"][split] = bad
        report["counts"][split] = {"annotated": len(layout.entries[split]) + len(layout.missing[split]),
                                   "missing": len(layout.missing[split]), "unusable": len(bad),
                                   "unusable_by_category": by_category, "listed": len(lines)}
    (out / "classes.json").write_text(json.dumps(class_index, indent=1) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def read_class_names(path: str | Path) -> dict[int, str]:
    """Index -> class name from a prepared ``classes.json`` (written above as name -> index);
    {} when the file is missing or unreadable (names are then only for display)."""
    try:
        return {int(i): str(n) for n, i in json.loads(Path(path).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def summary(report: dict[str, Any]) -> Iterable[str]:
    """Human-readable lines for a report (printed by the CLI)."""
    yield f"{report['dataset']}: {report['num_classes']} classes; video_root {report['video_root']}"
    for split, c in report["counts"].items():
        yield (f"  {split}: {c['listed']} listed of {c['annotated']} annotated "
               f"({c['missing']} missing, {c['unusable']} unusable)")
    if any(report["missing"].values()) or any(report["unusable"].values()):
        yield f"  paths below are relative to {report['root']}"
    for split, missing in report["missing"].items():
        for m in missing[:10]:
            yield f"  missing [{split}] {m['path']}" + ("" if m["reason"] == "no such file" else f": {m['reason']}")
        if len(missing) > 10:
            yield f"  ... and {len(missing) - 10} more missing in report.json"
    for split, bad in report["unusable"].items():
        for b in bad[:10]:
            yield f"  unusable [{split}] {b['path']}: {b['reason']}"
        if len(bad) > 10:
            yield f"  ... and {len(bad) - 10} more unusable in report.json"
