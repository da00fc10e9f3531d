"""Reading the official SSv2 and K400 download layouts into (split, video path, class) entries.

Only annotations and file locations are handled here (no decoding): see prepare.py.
Missing raw data raises :class:`MissingRawData` whose message says which files are
expected where and how to obtain them; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

SSV2_HOWTO = (
    "Something-Something V2 must be downloaded by you under its licence from Qualcomm's site\n"
    "(https://www.qualcomm.com/developer/software/something-something-v-2-dataset), then the\n"
    "zip parts concatenated and extracted. Expected under --root:\n"
    "  labels.json, train.json, validation.json   (or something-something-v2-{labels,train,validation}.json,\n"
    "                                               also accepted in a labels/ sub-folder)\n"
    "  <id>.webm videos, directly in --root or in 20bn-something-something-v2/ (or videos/)"
)
K400_HOWTO = (
    "Kinetics-400 must be downloaded by you (YouTube terms apply), e.g. with the CVDF scripts\n"
    "(https://github.com/cvdfoundation/kinetics-dataset: k400_downloader.sh + k400_extractor.sh) or the\n"
    "ActivityNet crawler (https://github.com/activitynet/ActivityNet/tree/master/Crawler/Kinetics).\n"
    "Expected under --root:\n"
    "  train.csv and validate.csv (or val.csv), header label,youtube_id,time_start,time_end,split\n"
    "                                               (also accepted in an annotations/ sub-folder)\n"
    "  train/ and val/ (or validate/) holding {youtube_id}_{start:06d}_{end:06d}.mp4, flat or in\n"
    "  class sub-folders"
)


class MissingRawData(Exception):
    """The raw dataset is not where it should be (message says what and how to get it)."""


@dataclass
class Layout:
    """A discovered dataset: entries per split, class names, and what is missing.

    ``other_extension`` maps an absent video's expected path to a file of the same name
    with another extension (a K400 clip saved as ``.mkv``, say), which the layout does
    not accept but the report names.
    """

    dataset: str
    root: Path
    classes: list[str]
    entries: dict[str, list[tuple[Path, str]]]  # split -> [(video path, class name)]
    missing: dict[str, list[Path]] = field(default_factory=dict)  # split -> listed but absent
    other_extension: dict[Path, Path] = field(default_factory=dict)


def _by_stem(files: list[Path], suffix: str) -> dict[str, Path]:
    """Files whose suffix is not ``suffix``, by stem (the first in sorted order wins)."""
    out: dict[str, Path] = {}
    for p in sorted(files):
        if p.suffix != suffix and not p.name.startswith(".") and p.is_file():
            out.setdefault(p.stem, p)
    return out


def _first(root: Path, candidates: list[str]) -> Path | None:
    for c in candidates:
        if (root / c).is_file():
            return root / c
    return None


def _find_annotation(root: Path, names: list[str], subdirs: list[str]) -> Path | None:
    return _first(root, [f"{d}/{n}" if d else n for d in subdirs for n in names])


def strip_brackets(template: str) -> str:
    """SSv2 class name: the template with its brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: str | Path) -> Layout:
    """Entries of the official SSv2 layout under ``root`` (see :data:`SSV2_HOWTO`)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingRawData(f"SSv2 root {root} does not exist.\n{SSV2_HOWTO}")
    subdirs = ["", "labels", "annotations"]
    files = {}
    for key in ("labels", "train", "validation"):
        files[key] = _find_annotation(root, [f"{key}.json", f"something-something-v2-{key}.json"], subdirs)
    absent = [k for k, v in files.items() if v is None]
    if absent:
        raise MissingRawData(f"SSv2 annotation file(s) {absent} not found under {root}.\n{SSV2_HOWTO}")
    labels = json.loads(files["labels"].read_text())
    classes = sorted(labels, key=lambda name: int(labels[name]))
    if [int(labels[c]) for c in classes] != list(range(len(classes))):
        raise ValueError(f"{files['labels']}: ids are not 0..{len(classes) - 1}")
    video_dirs = [d for d in (root / "20bn-something-something-v2", root / "videos", root) if d.is_dir()]
    video_dir = next((d for d in video_dirs if any(d.glob("*.webm"))), None)
    if video_dir is None:
        raise MissingRawData(f"no .webm videos found in {[str(d) for d in video_dirs]}.\n{SSV2_HOWTO}")
    entries: dict[str, list[tuple[Path, str]]] = {}
    missing: dict[str, list[Path]] = {}
    other_extension: dict[Path, Path] = {}
    others: dict[str, Path] | None = None  # indexed on the first absent video only
    for split, key in (("train", "train"), ("val", "validation")):
        entries[split], missing[split] = [], []
        for item in json.loads(files[key].read_text()):
            name = strip_brackets(item["template"])
            if name not in labels:
                raise ValueError(f"{files[key]}: id {item['id']}: template {item['template']!r} not in labels.json")
            path = video_dir / f"{item['id']}.webm"
            if path.exists():
                entries[split].append((path, name))
                continue
            missing[split].append(path)
            if others is None:
                others = _by_stem(list(video_dir.iterdir()), ".webm")
            if path.stem in others:
                other_extension[path] = others[path.stem]
    return Layout("ssv2", root, classes, entries, missing, other_extension)


K400_SPLITS = {"train": (["train.csv"], ["train"]),
               "val": (["validate.csv", "val.csv"], ["val", "validate", "valid"])}


def read_k400(root: str | Path) -> Layout:
    """Entries of the official K400 layout under ``root`` (see :data:`K400_HOWTO`).

    Class index = position in the sorted class names of all splits' CSVs.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingRawData(f"K400 root {root} does not exist.\n{K400_HOWTO}")
    rows: dict[str, list[dict[str, str]]] = {}
    dirs: dict[str, Path] = {}
    for split, (csv_names, dir_names) in K400_SPLITS.items():
        csv_path = _find_annotation(root, csv_names, ["", "annotations"])
        video_dir = next((root / d for d in dir_names if (root / d).is_dir()), None)
        if csv_path is None or video_dir is None:
            raise MissingRawData(
                f"K400 {split}: annotation {csv_names} found: {csv_path is not None}, "
                f"video folder {dir_names} found: {video_dir is not None} (under {root}).\n{K400_HOWTO}")
        with open(csv_path, newline="") as fh:
            rows[split] = list(csv.DictReader(fh))
        need = {"label", "youtube_id", "time_start", "time_end"}
        if rows[split] and not need <= set(rows[split][0]):
            raise ValueError(f"{csv_path}: columns {sorted(rows[split][0])} lack {sorted(need)}")
        dirs[split] = video_dir
    classes = sorted({r["label"] for split_rows in rows.values() for r in split_rows})
    entries: dict[str, list[tuple[Path, str]]] = {}
    missing: dict[str, list[Path]] = {}
    other_extension: dict[Path, Path] = {}
    for split, split_rows in rows.items():
        # Index every file once (flat or in class sub-folders) instead of probing paths.
        files = list(dirs[split].rglob("*"))
        found = {p.name: p for p in files if p.suffix == ".mp4"}
        others = _by_stem(files, ".mp4")
        entries[split], missing[split] = [], []
        for r in split_rows:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}.mp4"
            if name in found:
                entries[split].append((found[name], r["label"]))
                continue
            path = dirs[split] / name
            missing[split].append(path)
            if path.stem in others:
                other_extension[path] = others[path.stem]
    return Layout("k400", root, classes, entries, missing, other_extension)


def read_layout(dataset: str, root: str | Path) -> Layout:
    """Dispatch to :func:`read_ssv2` or :func:`read_k400`."""
    if dataset == "ssv2":
        return read_ssv2(root)
    if dataset == "k400":
        return read_k400(root)
    raise ValueError(f"dataset must be 'ssv2' or 'k400' (got {dataset!r})")
