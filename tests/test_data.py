"""far.data: synthetic datasets in the official layouts, preparation and its report,
decoding (VP9 threads, corrupt/truncated files), the reference sampling, augmentation,
datasets, loaders.

The two synthetic datasets are generated once per module at a small size and prepared
with the same code as real downloads; everything else runs on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
import shutil
from pathlib import Path

import av  # noqa: F401  (before decord: see far/data/video.py, shared libvpx)
import numpy as np
import pytest
import torch

from far.data import sampling
from far.data.cli import main as data_main
from far.data.config import DataConfig
from far.data.dataset import VideoDataset, collate, read_list, unique_videos
from far.data.encode import reencode, write_video
from far.data.layouts import MissingRawData, strip_brackets
from far.data.loader import build_loader
from far.data.mixup import AugmentConfig, build_mixup
from far.data.prepare import prepare
from far.data.synth import (SSV2_PAIRS, SSV2_VIDEO_DIR, SynthSpec, generate, render_k400, render_ssv2,
                            sample_ssv2_scene)
from far.data.batch_augment import ClipAugment, EvalViews
from far.data.reference_augment import PretrainTransform, TrainTransform
from far.data.transforms import (EvalTransform, PretrainDraw, TrainDraw, eval_crop_offsets, multi_scale_crop_box,
                                 randaug_policy, to_normalised_tensor)
from far.data.video import CorruptVideo, Video, decode_threads, error_text, probe

TIME_OF_DAY = re.compile(r"\[\d{2}:\d{2}:\d{2}\]")  # decord's message prefix, e.g. [01:10:05]

SSV2_SPEC = SynthSpec(kind="ssv2", classes=4, videos_per_class_train=3, videos_per_class_val=2,
                      height=48, width=64, frames=24, fps=12, seed=0)
# 72 frames > the 64-frame dense window, so training windows really move.
K400_SPEC = SynthSpec(kind="k400", classes=3, videos_per_class_train=3, videos_per_class_val=2,
                      height=48, width=64, frames=72, fps=12, seed=0)


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    raw = tmp_path_factory.mktemp("ssv2_raw")
    generate(SSV2_SPEC, raw, progress=False)
    out = tmp_path_factory.mktemp("ssv2_lists")
    report = prepare("ssv2", raw, out, progress=False)
    return raw, out, report


@pytest.fixture(scope="module")
def k400(tmp_path_factory):
    raw = tmp_path_factory.mktemp("k400_raw")
    generate(K400_SPEC, raw, progress=False)
    out = tmp_path_factory.mktemp("k400_lists")
    report = prepare("k400", raw, out, progress=False)
    return raw, out, report


def small_cfg(dataset: str, out: Path, report: dict, **kw) -> DataConfig:
    base = dict(train_list=str(out / "train.csv"), val_list=str(out / "val.csv"), root=report["video_root"],
                num_classes=report["num_classes"], num_frames=8, input_size=32, short_side=32)
    base.update(kw)
    return DataConfig.preset(dataset, **base)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ---- synthetic datasets -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ssv2", "k400"])
def test_synth_is_byte_identical_per_seed(tmp_path, kind):
    # 64x80 and seed 1 as in the default pipeline; with x264's macroblock tree the first
    # k400 train video below encoded to different bytes in about 1 run in 4.
    spec = SynthSpec(kind=kind, classes=2, videos_per_class_train=1, videos_per_class_val=1,
                     height=64, width=80, frames=32 if kind == "ssv2" else 80, seed=1)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(spec, a, progress=False)
    generate(spec, b, progress=False, workers=2)  # encoding processes change no byte
    generate(SynthSpec(**{**spec.__dict__, "seed": 6}), c, progress=False)
    files_a = tree_bytes(a)
    assert files_a == tree_bytes(b)  # every file, videos included, byte for byte
    videos_a = {k: v for k, v in files_a.items() if k.endswith((".webm", ".mp4"))}
    assert len(videos_a) == 4
    videos_c = {k: v for k, v in tree_bytes(c).items() if k.endswith((".webm", ".mp4"))}
    assert set(videos_a.values()).isdisjoint(videos_c.values())  # another seed: other videos


def test_x264_encodes_the_same_frames_to_the_same_bytes(tmp_path):
    """Measured with x264's macroblock tree (PyAV 18.1): 30 encodes of these frames gave
    7 different files, one encoder thread notwithstanding; with ``mbtree=0``, one. The
    difference comes from memory the encoder reads before writing it, so other videos
    are encoded in between, as when a dataset is generated."""
    rng = np.random.default_rng([1, 2, 0, 0, 0])  # the first k400 train video of seed 1
    rng.integers(0, 64, 11), rng.integers(0, 300)  # its id and start time
    frames = render_k400(rng, 0, 80, 64, 80)
    digests = set()
    for k in range(20):
        digests.add(hashlib.sha256(write_video(tmp_path / "v.mp4", frames, 12).read_bytes()).hexdigest())
        write_video(tmp_path / "other.mp4", render_k400(np.random.default_rng(k), k % 4, 80, 64, 80), 12)
    assert len(digests) == 1


def test_synth_ssv2_official_layout_and_codec(ssv2):
    raw, _, _ = ssv2
    labels = json.loads((raw / "labels.json").read_text())
    assert sorted(labels.values(), key=int) == [str(i) for i in range(4)]
    train = json.loads((raw / "train.json").read_text())
    assert len(train) == 12 and {"id", "label", "template", "placeholders"} <= set(train[0])
    assert "[something]" in train[0]["template"]
    assert all(strip_brackets(e["template"]) in labels for e in train)
    webm = raw / SSV2_VIDEO_DIR / f"{train[0]['id']}.webm"
    with av.open(str(webm)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert container.streams.video[0].frames in (0, 24)  # webm may not store a count


def test_synth_k400_official_layout_and_codec(k400):
    raw, _, _ = k400
    header = (raw / "train.csv").read_text().splitlines()[0]
    assert header == "label,youtube_id,time_start,time_end,split"
    row = (raw / "validate.csv").read_text().splitlines()[1].split(",")
    name = f"{row[1]}_{int(row[2]):06d}_{int(row[3]):06d}.mp4"
    with av.open(str(raw / "val" / name)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames == 72


def test_synth_default_sizes_and_undecodable_sizes(tmp_path):
    assert SynthSpec(kind="ssv2").frames == 32 and SynthSpec(kind="k400").frames == 80
    with pytest.raises(ValueError, match="pairs"):
        SynthSpec(kind="ssv2", classes=3)
    # decord 0.6 cannot return 48-px-wide frames: refused at generation, not at training.
    with pytest.raises(ValueError, match="decord cannot read the generated 32x48"):
        generate(SynthSpec(kind="k400", classes=2, videos_per_class_train=1, videos_per_class_val=1,
                           height=32, width=48, frames=8), tmp_path, progress=False)


def test_synth_objects_span_patches_on_quieter_backgrounds():
    """Learnability knobs: the object's radius follows ``object_scale`` (x0.85-1.15 of the
    short side), and the background varies less than the object stands out from it."""
    import math

    from far.data.synth import draw_frame, make_background, render_k400, ssv2_pose

    h, w = 64, 80
    for i in range(6):
        scene = sample_ssv2_scene(np.random.default_rng([3, i]), h, w, object_scale=0.25)
        assert 0.85 * 0.25 <= scene.radius <= 1.15 * 0.25
        assert scene.hi - scene.lo >= 2 * 0.3 * 0.8  # travel of the moving classes
        # The object (opaque, mid-video) spans several 16x16 patches: even a thin star covers
        # most of one patch's area (a disc ~3), against ~0.4 at the former radius 0.12-0.18.
        pose = ssv2_pose(scene, "rotation", 0.5, h, w)
        frame = draw_frame(scene.background, scene.shape, np.array([0, 0, 0]), np.array([0, 0, 0]), pose)
        covered = int((np.abs(frame.astype(int) - scene.background.astype(int)).max(-1) > 0).sum())
        assert covered > 0.75 * 16 * 16
    for c in range(4):
        frames = render_k400(np.random.default_rng([4, c]), c, 8, h, w, object_scale=0.25)
        assert frames.shape == (8, h, w, 3)
    for k in range(20):  # the same draw at contrast 1 and 0.35: every deviation scaled by 0.35
        quiet, loud = (make_background(np.random.default_rng(k), h, w, c).astype(float) for c in (0.35, 1.0))
        dq, dl = (x.reshape(-1, 3) - x.reshape(-1, 3).mean(0) for x in (quiet, loud))  # per-channel deviations
        assert dq.std() <= 0.36 * dl.std() + 0.5 and dq.std(0).max() < 45
    with pytest.raises(ValueError, match="object_scale"):
        SynthSpec(kind="k400", object_scale=0.6)
    assert math.isclose(SynthSpec().object_scale, 0.25)


@pytest.mark.parametrize("pair", range(len(SSV2_PAIRS)))
def test_ssv2_pair_classes_differ_only_in_time_order(tmp_path, pair):
    """Class 2k+1 is class 2k's video played backwards: the same frames, in reverse order.

    Checked on encoded and decoded VP9 files, as a model sees them: the reversed-class
    video, reversed again, matches the forward one up to codec noise, while the two
    classes frame by frame differ clearly. Any statistic that ignores frame order
    therefore has the same value for both, and a model ignoring time order cannot tell
    the pair apart.
    """
    rng = np.random.default_rng([7, pair])
    scene = sample_ssv2_scene(rng, 48, 64)  # class-independent: the scene draw takes no class
    fwd, bwd = render_ssv2(scene, 2 * pair, 16), render_ssv2(scene, 2 * pair + 1, 16)
    assert np.array_equal(bwd, fwd[::-1])
    decoded = []
    for name, frames in (("fwd", fwd), ("bwd", bwd)):
        write_video(tmp_path / f"{name}.webm", frames, 12, "libvpx-vp9")
        video = Video(tmp_path / f"{name}.webm")
        decoded.append(video.frames(range(len(video))).astype(np.float32))
    a, b = decoded
    assert len(a) == len(b) == 16
    # Fraction of pixels that change by more than 60 levels: codec noise almost never
    # does, a moved / turned / faded object does.
    changed = lambda x, y: float((np.abs(x - y).max(-1) > 60).mean())  # noqa: E731
    same_frames, other_order = changed(a, b[::-1]), changed(a, b)
    assert same_frames < 0.005  # codec noise only
    assert other_order > 0.008 and other_order > 4 * same_frames  # the order is visible
    order_free = lambda x: np.sort(x.mean(axis=(1, 2, 3)))  # noqa: E731  (a frame-order-free statistic)
    assert np.abs(order_free(a) - order_free(b)).max() < 2.0


# ---- preparation --------------------------------------------------------------------------------
def test_prepare_ssv2_lists_classes_report(ssv2):
    raw, out, report = ssv2
    labels = json.loads((raw / "labels.json").read_text())
    assert json.loads((out / "classes.json").read_text()) == {k: int(v) for k, v in labels.items()}
    for split, ann in (("train", "train.json"), ("val", "validation.json")):
        lines = (out / f"{split}.csv").read_text().splitlines()
        expected = [f"{SSV2_VIDEO_DIR}/{e['id']}.webm {labels[strip_brackets(e['template'])]}"
                    for e in json.loads((raw / ann).read_text())]
        assert lines == expected
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert report["counts"]["train"] == {"annotated": 12, "missing": 0, "unusable": 0,
                                         "unusable_by_category": dict.fromkeys(
                                             ["empty", "too_small", "unreadable", "undecodable", "truncated"], 0),
                                         "listed": 12}
    assert report["counts"]["val"]["listed"] == 8 and report["video_root"] == str(raw)  # as given


def test_prepare_k400_flat_and_class_subfolders(k400, tmp_path):
    raw, out, report = k400
    classes = json.loads((out / "classes.json").read_text())
    assert list(classes) == sorted(classes) and list(classes.values()) == [0, 1, 2]
    rows = (raw / "train.csv").read_text().splitlines()[1:]
    expected = [f"train/{r.split(',')[1]}_{int(r.split(',')[2]):06d}_{int(r.split(',')[3]):06d}.mp4 "
                f"{classes[r.split(',')[0]]}" for r in rows]
    assert (out / "train.csv").read_text().splitlines() == expected
    assert report["counts"]["val"]["listed"] == 6
    # The same download sorted into class sub-folders gives the same lists.
    nested = tmp_path / "nested"
    shutil.copytree(raw, nested)
    for split in ("train", "val"):
        for r in (nested / ("validate.csv" if split == "val" else "train.csv")).read_text().splitlines()[1:]:
            label, yid, start, end, _ = r.split(",")
            name = f"{yid}_{int(start):06d}_{int(end):06d}.mp4"
            (nested / split / label).mkdir(exist_ok=True)
            (nested / split / name).rename(nested / split / label / name)
    out2 = tmp_path / "lists"
    prepare("k400", nested, out2, progress=False)
    labels_of = lambda f: [(Path(p).name, lab) for p, lab in (line.rsplit(" ", 1) for line in f.read_text().splitlines())]  # noqa: E731
    assert labels_of(out2 / "train.csv") == labels_of(out / "train.csv")
    assert all(line.startswith("train/") and line.count("/") == 2 for line in (out2 / "train.csv").read_text().splitlines())


def test_prepare_reports_corrupt_empty_truncated_missing(ssv2, k400, tmp_path):
    ssv2_raw, _, _ = ssv2
    raw = tmp_path / "ssv2"
    shutil.copytree(ssv2_raw, raw)
    ids = [e["id"] for e in json.loads((raw / "train.json").read_text())]
    video = lambda i: raw / SSV2_VIDEO_DIR / f"{ids[i]}.webm"  # noqa: E731
    video(0).write_bytes(b"")  # zero bytes
    data = video(1).read_bytes()
    video(1).write_bytes(data[: len(data) // 2])  # truncated: decord still opens it, shorter
    video(2).write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())  # garbage
    video(3).write_bytes(b"\x1a\x45\xdf\xa3" * 100)  # < 1 KB
    video(4).unlink()  # annotated but absent
    out = tmp_path / "lists"
    report = prepare("ssv2", raw, out, progress=False)
    bad = {Path(b["path"]).name: b["category"] for b in report["unusable"]["train"]}
    assert bad == {video(0).name: "empty", video(1).name: "truncated", video(2).name: "unreadable",
                   video(3).name: "too_small"}
    assert all(b["reason"] for b in report["unusable"]["train"])
    assert report["missing"]["train"] == [{"path": f"{SSV2_VIDEO_DIR}/{ids[4]}.webm", "reason": "no such file"}]
    c = report["counts"]["train"]
    assert (c["annotated"], c["missing"], c["unusable"], c["listed"]) == (12, 1, 4, 7)
    listed = (out / "train.csv").read_text()
    assert all(f"/{ids[i]}.webm " not in listed for i in range(5)) and listed.count("\n") == 7
    assert json.loads((out / "report.json").read_text()) == report

    # K400: an mp4 cut off loses its index (moov) and cannot be opened at all; the
    # reason names the likely cause, which decord's own text does not.
    k_raw = tmp_path / "k400"
    shutil.copytree(k400[0], k_raw)
    mp4 = sorted((k_raw / "val").glob("*.mp4"))[0]
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size * 30 // 100])
    k_report = prepare("k400", k_raw, tmp_path / "k_lists", progress=False)
    [cut] = k_report["unusable"]["val"]
    assert (cut["path"], cut["category"]) == (f"val/{mp4.name}", "unreadable")
    assert "moov atom not found" in cut["reason"] and "incomplete download or truncated file" in cut["reason"]
    assert str(k_raw) not in cut["reason"]  # decord's "Error reading <path>" shortened to the file name
    assert k_report["counts"]["val"]["listed"] == 5


def test_prepare_report_is_the_same_on_every_run(k400, tmp_path, monkeypatch):
    """decord's messages carry the time of day; report.json must not. Paths in the report
    are relative to ``root`` (absolute), whatever the working directory."""
    raw = tmp_path / "raw"
    shutil.copytree(k400[0], raw)
    mp4 = sorted((raw / "train").glob("*.mp4"))[0]
    data = bytearray(mp4.read_bytes())
    data[len(data) // 2: len(data) // 2 + 3000] = bytes(3000)  # a hole: decoding fails with a DECORDError
    mp4.write_bytes(bytes(data))
    with pytest.raises(CorruptVideo) as err:
        probe(mp4)
    assert TIME_OF_DAY.search(str(err.value.__cause__))  # decord's raw text has a time of day
    monkeypatch.chdir(tmp_path)
    first = prepare("k400", "raw", "lists1", progress=False)
    second = prepare("k400", "raw", "lists2", progress=False)
    assert (tmp_path / "lists1" / "report.json").read_bytes() == (tmp_path / "lists2" / "report.json").read_bytes()
    [bad] = first["unusable"]["train"]
    assert bad["path"] == f"train/{mp4.name}" and bad["category"] == "undecodable"
    assert not TIME_OF_DAY.search(bad["reason"]) and ".cc:" not in bad["reason"]
    # root as given: a clone of the data in another folder hashes to the same bytes
    assert first["root"] == "raw" and "relative to root" in first["report_paths"]
    assert second == first


def test_error_text_drops_time_of_day_and_source_lines():
    class DECORDError(Exception):
        pass

    err = DECORDError("[01:10:05] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: [01:10:05] "
                      "/github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: x >= 0 "
                      "(-11 vs. 0) Thread worker: Error sending packet.\n\nStack trace:\n  [bt] (0) libdecord.so")
    assert error_text(err) == "DECORDError: Check failed: x >= 0 (-11 vs. 0) Thread worker: Error sending packet."
    opening = RuntimeError("Error reading /data/k400/val/abc_000001_000011.mp4...")
    shortened = error_text(opening, "/data/k400/val/abc_000001_000011.mp4")
    assert shortened == "RuntimeError: Error reading abc_000001_000011.mp4..."


def test_cut_mp4_reasons_name_the_likely_cause(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (24, 64, 80, 3), dtype=np.uint8)
    whole = write_video(tmp_path / "whole.mp4", frames, 12)  # index (moov) at the end, as usual
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 30 // 100])
    with pytest.raises(CorruptVideo) as err:
        probe(cut)
    assert err.value.category == "unreadable"
    assert err.value.reason.startswith("cannot open: moov atom not found (the mp4 index is missing); likely an "
                                       "incomplete download or truncated file: it ends at byte")
    assert "'mdat' box" in err.value.reason and "decord: RuntimeError" in err.value.reason
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptVideo) as err:
        probe(garbage)
    assert "download" not in err.value.reason  # no guess without evidence (no mp4 boxes at all)


def test_missing_clip_with_another_extension_is_named(k400, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(k400[0], raw)
    mp4 = sorted((raw / "val").glob("*.mp4"))[0]
    mp4.rename(mp4.with_suffix(".mkv"))
    report = prepare("k400", raw, tmp_path / "lists", progress=False)
    [missing] = report["missing"]["val"]
    assert missing["path"] == f"val/{mp4.name}"
    assert missing["reason"].startswith(f"no such file, but val/{mp4.stem}.mkv exists with another extension")
    code = data_main(["prepare", "--dataset", "k400", "--root", str(raw), "--out", str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and f"missing [val] val/{mp4.name}: no such file, but val/{mp4.stem}.mkv" in out
    assert f"paths below are relative to {raw.resolve()}" in out


def test_truncated_mp4_with_index_at_front_is_detected(tmp_path):
    """An mp4 with its index first (faststart), cut anywhere, is never accepted.

    decord alone fails to open some cuts, fails on the last frame of others, and for
    some opens a shorter, fully decodable video; the length the header declares gives
    those away.
    """
    frames = [np.full((96, 128, 3), 7 * i % 256, np.uint8) for i in range(32)]
    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    assert probe(path) == 32
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    opened_shorter = 0
    for percent in range(50, 100):
        cut.write_bytes(data[: len(data) * percent // 100])
        with pytest.raises(CorruptVideo) as err:
            probe(cut)
        try:
            shorter = len(Video(cut, check_truncation=False)) < 32
        except CorruptVideo:
            continue
        if shorter:
            opened_shorter += 1
            assert err.value.category == "truncated" and "header declares 32" in err.value.reason
    assert opened_shorter > 0


def test_missing_raw_data_says_what_and_how(tmp_path, capsys):
    with pytest.raises(MissingRawData) as err:
        prepare("ssv2", tmp_path / "nowhere", tmp_path / "out", progress=False)
    assert "does not exist" in str(err.value) and "qualcomm.com" in str(err.value)
    (tmp_path / "ssv2").mkdir()
    (tmp_path / "ssv2" / "labels.json").write_text("{}")
    with pytest.raises(MissingRawData) as err:
        prepare("ssv2", tmp_path / "ssv2", tmp_path / "out", progress=False)
    assert "['train', 'validation']" in str(err.value)
    for name in ("labels.json", "train.json", "validation.json", "<id>.webm", "licence"):
        assert name in str(err.value)
    code = data_main(["prepare", "--dataset", "k400", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    message = capsys.readouterr().err
    assert code == 2 and "raw data missing" in message
    for name in ("train.csv", "validate.csv", "{youtube_id}_{start:06d}_{end:06d}.mp4", "cvdfoundation"):
        assert name in message
    assert not (tmp_path / "o" / "train.csv").exists()


def test_reencode_short_side_and_skip_done(ssv2, tmp_path):
    raw, _, _ = ssv2
    out = tmp_path / "lists"
    report = prepare("ssv2", raw, out, reencode_short_side=32, progress=False)
    root = Path(report["video_root"])
    assert root == (out / "videos").resolve() and report["reencode_short_side"] == 32
    first = read_list(out / "train.csv", root)[0][0]
    assert first.endswith(".mp4")
    video = Video(first)
    assert video.frames([0]).shape == (1, 32, 44, 3) and len(video) == 24  # 48x64 -> 32 x 42.67 -> 43 -> even
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.mp4")}
    assert len(stamps) == 20
    assert prepare("ssv2", raw, out, reencode_short_side=32, progress=False) == report
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.mp4")} == stamps  # nothing re-encoded
    marker = tmp_path / "done.mp4"
    marker.write_bytes(b"already here")
    reencode(raw / SSV2_VIDEO_DIR / "1.webm", marker, 32)
    assert marker.read_bytes() == b"already here"


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_reencode_applies_the_display_rotation(tmp_path, degrees):
    """A phone video: landscape pixels plus a display rotation, shown (and decoded by
    decord) upright. The re-encoded file must be upright too, with no rotation left."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display rotation (needs set_display_rotation)")
    src = tmp_path / "phone.mp4"
    frame = np.full((64, 128, 3), 40, np.uint8)
    frame[:16, :24] = 250  # a bright block in the stored picture's top-left corner
    with av.open(str(src), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        stream.set_display_rotation(degrees)  # counter-clockwise, as VideoFrame.rotation reads it
        for _ in range(6):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    shown = Video(src).frames([0])[0]
    turned = np.rot90(frame, degrees // 90)
    assert shown.shape == turned.shape  # decord applies the rotation
    out = reencode(src, tmp_path / "out.mp4", 32)
    with av.open(str(out)) as container:
        assert next(container.decode(video=0)).rotation == 0
    got = Video(out).frames([0])[0].astype(float)
    # Short side 32 of the upright picture (decord 0.6 cannot return 48-px-wide frames).
    h, w = (64, 32) if degrees % 180 else (32, 64)
    assert got.shape == (h, w, 3)
    expected = av.VideoFrame.from_ndarray(np.ascontiguousarray(turned), format="rgb24").reformat(
        width=w, height=h).to_ndarray().astype(float)
    assert np.abs(got - expected).mean() < 4  # the same picture, upright (codec noise only)


# ---- decoding -----------------------------------------------------------------------------------
def test_vp9_is_decoded_with_one_thread(ssv2, k400, monkeypatch):
    assert decode_threads("a/b.webm", 8) == 1 and decode_threads("a/b.WEBM", 0) == 1
    assert decode_threads("a/b.mp4", 8) == 8
    import decord

    seen = []
    real = decord.VideoReader

    def spy(path, *args, **kw):
        seen.append((Path(path).suffix, kw.get("num_threads")))
        return real(path, *args, **kw)

    monkeypatch.setattr(decord, "VideoReader", spy)
    webm = next((ssv2[0] / SSV2_VIDEO_DIR).glob("*.webm"))
    mp4 = next((k400[0] / "train").glob("*.mp4"))
    assert Video(webm, num_threads=4).num_threads == 1
    assert Video(mp4, num_threads=4).num_threads == 4
    assert seen == [(".webm", 1), (".mp4", 4)]


def test_video_frames_any_order_with_repeats(k400):
    mp4 = next((k400[0] / "train").glob("*.mp4"))
    video = Video(mp4)
    all_frames = video.frames(range(len(video)))
    picked = video.frames([5, 1, 5, 70])
    assert np.array_equal(picked, all_frames[[5, 1, 5, 70]])
    with pytest.raises(IndexError):
        video.frames([72])


# ---- sampling: the reference formulas, transcribed independently -------------------------------
class FixedDraws:
    """Stands in for random.Random: ``randrange`` returns preset values in order."""

    def __init__(self, values):
        self.values = list(values)

    def randrange(self, *args):
        return self.values.pop(0)


def ref_segment_train(length, n, draws):
    # TSN as in the reference SSv2 train branch: n equal segments of length // n frames.
    avg = length // n
    if avg == 0:
        return [0] * n
    return [seg * avg + d for seg, d in zip(range(n), draws)]


def ref_segment_test(length, n, view):
    # Reference SSv2 test, 2 views: segment starts (view 0) and segment middles (view 1).
    tick = length / float(n)
    starts = [int(tick * x) for x in range(n)]
    middles = [int(tick / 2.0 + tick * x) for x in range(n)]
    return sorted(starts + middles)[view::2]


def ref_dense_train(length, clip_len, rate, end):
    window = clip_len * rate
    if length <= window:
        k = length // rate
        pts = [length * i / (k - 1) for i in range(k)] if k > 1 else [0.0] * k
        pts += [float(length)] * (clip_len - k)
        return [min(max(int(p), 0), length - 1) for p in pts]
    start = end - window
    return [int(min(max(start + window * i / (clip_len - 1), start), end - 1)) for i in range(clip_len)]


def ref_dense_test(length, clip_len, rate, view, views):
    every = list(range(0, length, rate))
    while len(every) < clip_len:
        every.append(every[-1])
    step = max((len(every) - clip_len) / (views - 1), 0)
    first = int(view * step)
    return every[first:first + clip_len]


@pytest.mark.parametrize("length", [1, 5, 15, 16, 17, 31, 32, 47, 48, 100, 301])
def test_segment_sampling_matches_reference(length):
    n = 16
    avg = length // n
    for trial in range(3):
        draws = [(trial * 7 + i) % avg for i in range(n)] if avg else []
        got = sampling.segment_train(length, n, FixedDraws(draws)) if avg else sampling.segment_train(
            length, n, random.Random(0))
        if avg:
            assert got.tolist() == ref_segment_train(length, n, draws)
        else:  # documented deviation: every frame in order instead of frame 0 sixteen times
            assert got.tolist() == [i * length // n for i in range(n)]
    rng = random.Random(0)
    if avg:  # the real draws cover each segment uniformly
        seen = np.array([sampling.segment_train(length, n, rng) for _ in range(400)])
        for seg in range(n):
            assert set(seen[:, seg].tolist()) == set(range(seg * avg, (seg + 1) * avg))
    for view in range(2):
        assert sampling.segment_test(length, n, view, 2).tolist() == ref_segment_test(length, n, view)
    middle = sampling.segment_test(length, n, 0, 1)
    assert middle.tolist() == ref_segment_test(length, n, 1)  # one view: the segment middles


@pytest.mark.parametrize("length", [1, 3, 4, 10, 40, 63, 64, 65, 66, 80, 300])
def test_dense_sampling_matches_reference(length):
    for end in (range(64, length) if length > 64 else [None]):
        got = sampling.dense_train(length, 16, 4, FixedDraws([end]))
        assert got.tolist() == ref_dense_train(length, 16, 4, end)
    if length > 64:
        rng = random.Random(0)
        ends = {int(sampling.dense_train(length, 16, 4, rng)[-1]) + 1 for _ in range(4000)}
        assert ends == set(range(64, length))  # every window position reachable, as randint(64, length)
    for view in range(5):
        got = sampling.dense_test(length, 16, 4, view, 5)
        assert got.tolist() == ref_dense_test(length, 16, 4, view, 5)
        assert len(got) == 16 and got.min() >= 0 and got.max() < length
    if length >= 64:
        assert np.all(np.diff(sampling.dense_test(length, 16, 4, 2, 5)) == 4)  # test clips: exact stride
    looped = sampling.dense_train(length, 16, 4, random.Random(0), "loop") if length <= 64 else None
    if looped is not None:
        assert looped.tolist() == [(4 * k) % length for k in range(16)]


def test_sampled_indices_pinned_at_the_paper_settings():
    """Literal indices for 16 frames: SSv2 TSN (16 segments, one frame each) on a 48-frame
    video, K400 dense 16 x 4 on a 300-frame video (the usual K400 length)."""
    # SSv2 test: segment starts (view 0 of 2) and segment midpoints (view 1; also a single view).
    assert sampling.segment_test(48, 16, 0, 2).tolist() == list(range(0, 48, 3))
    midpoints = list(range(1, 48, 3))  # int(1.5 + 3 i)
    assert sampling.segment_test(48, 16, 1, 2).tolist() == midpoints == sampling.segment_test(48, 16, 0, 1).tolist()
    rng = random.Random(0)
    draws = np.array([sampling.segment_train(48, 16, rng) for _ in range(200)])
    assert np.all(draws // 3 == np.arange(16))  # one frame in each 3-frame segment
    assert {int(x) for x in draws[:, 5]} == {15, 16, 17}
    # K400 train: the first and last possible 64-frame windows.
    assert sampling.dense_train(300, 16, 4, FixedDraws([64])).tolist() == [
        0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]
    assert sampling.dense_train(300, 16, 4, FixedDraws([299])).tolist() == [
        235, 239, 243, 247, 252, 256, 260, 264, 269, 273, 277, 281, 286, 290, 294, 298]
    # K400 test: 5 evenly spaced windows of 16 frames at stride exactly 4, the first
    # from frame 0, the last ending at the last multiple of 4.
    for view, first in enumerate([0, 56, 116, 176, 236]):
        assert sampling.dense_test(300, 16, 4, view, 5).tolist() == list(range(first, first + 64, 4))


def test_eval_crop_positions_match_reference():
    # Landscape 224 x 298: left, centre, right at int(k * (298 - 224) / 2).
    assert eval_crop_offsets(224, 298, 224, 3) == [(0, 0), (0, 37), (0, 74)]
    assert eval_crop_offsets(301, 224, 224, 3) == [(0, 0), (38, 0), (77, 0)]  # portrait: top/centre/bottom
    assert eval_crop_offsets(240, 320, 224, 1) == [(8, 48)]


# ---- transforms ---------------------------------------------------------------------------------
def test_normalisation_and_shapes():
    cfg = DataConfig.preset("ssv2", input_size=32, short_side=40)
    mean_frame = np.broadcast_to((np.array(cfg.mean) * 255).astype(np.float32), (4, 6, 6, 3))
    x = to_normalised_tensor(mean_frame.round().astype(np.uint8), cfg.mean, cfg.std)
    assert x.shape == (3, 4, 6, 6) and x.abs().max() < 0.01
    white = to_normalised_tensor(np.full((1, 2, 2, 3), 255, np.uint8), cfg.mean, cfg.std)
    assert torch.allclose(white[:, 0, 0, 0], (1 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std))
    frames = np.random.default_rng(0).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    assert TrainTransform(cfg)(frames, seed=1).shape == (3, 8, 32, 32)
    ev = EvalTransform(cfg)
    assert ev.resize(frames).shape == (8, 40, 53, 3)
    views = [ev(frames, crop) for crop in range(3)]
    assert all(v.shape == (3, 8, 32, 32) for v in views) and not torch.equal(views[0], views[2])


def test_randaugment_is_clip_consistent_and_erasing_noise_per_frame():
    cfg = DataConfig.preset("ssv2", input_size=32, short_side=32, reprob=0.0)
    assert randaug_policy(cfg) == "rand-m9-n4-mstd0.5-inc1"
    frame = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    frames = np.repeat(frame, 6, axis=0)
    for seed in range(5):  # identical frames in -> identical frames out (one crop, one set of ops)
        x = TrainTransform(cfg)(frames, seed)
        assert all(torch.equal(x[:, 0], x[:, t]) for t in range(6))
    erase = TrainTransform(DataConfig.preset("ssv2", input_size=32, short_side=32, reprob=1.0))
    x = erase(frames, seed=3)
    # One rectangle at the same place on every frame (tests/test_transforms.py), filled
    # with fresh noise per frame: the erased frames differ.
    assert not all(torch.equal(x[:, 0], x[:, t]) for t in range(1, 6))
    assert torch.equal(erase(frames, seed=3), x)  # still a pure function of the seed


def test_no_flip_for_ssv2_flip_for_k400():
    with pytest.raises(ValueError, match="flip"):
        DataConfig.preset("ssv2", flip=True)
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[:, :, :8] = 255  # bright left edge
    plain = dict(input_size=32, short_side=32, reprob=0.0, randaug_num_ops=0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    ssv2_t = TrainTransform(DataConfig.preset("ssv2", **plain))
    k400_t = TrainTransform(DataConfig.preset("k400", **plain))
    left_bright = [bool(ssv2_t(frames, s)[0, 0, :, 0].mean() > ssv2_t(frames, s)[0, 0, :, -1].mean()) for s in range(40)]
    assert all(left_bright)
    k_left = [bool(k400_t(frames, s)[0, 0, :, 0].mean() > k400_t(frames, s)[0, 0, :, -1].mean()) for s in range(40)]
    assert 5 < sum(k_left) < 35


def test_multi_scale_crop_matches_videomae_pretraining():
    # TSN GroupMultiScaleCrop on a 240x320 frame, input 224, scales (1, .875, .75, .66):
    # sides int(240*s) = 240, 210, 180, 158 -> 224 is NOT snapped (|240-224| >= 3); pairs
    # with scale indices at most one apart; offsets on the (W-w)//4, (H-h)//4 step grid.
    sides = [240, 210, 180, 158]
    pairs = {(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1}
    seen_pairs = set()
    for seed in range(400):
        top, left, h, w = multi_scale_crop_box(240, 320, 224, (1.0, 0.875, 0.75, 0.66), random.Random(seed))
        seen_pairs.add((w, h))
        ws, hs = (320 - w) // 4, (240 - h) // 4
        fixed = {(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)}
        assert (left, top) in {(i * ws, j * hs) for i, j in fixed}
    assert seen_pairs == pairs
    # within 3 px of the input size -> snapped to it
    _, _, h, w = multi_scale_crop_box(64, 80, 64, (1.0,), random.Random(0))
    assert (h, w) == (64, 64)


def test_pretrain_transform_is_clip_consistent_crop_only():
    cfg = DataConfig.preset("ssv2", input_size=32, short_side=32)
    frame = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    frames = np.repeat(frame, 4, axis=0)
    t = PretrainTransform(cfg)
    for seed in range(5):
        x = t(frames, seed)
        assert x.shape == (3, 4, 32, 32) and all(torch.equal(x[:, 0], x[:, k]) for k in range(4))
        assert torch.equal(t(frames, seed), x)
    # colours untouched: no RandAugment, no erasing (a constant frame stays that constant)
    flat = np.full((2, 48, 64, 3), 77, np.uint8)
    assert torch.allclose(t(flat, 3), to_normalised_tensor(flat[:, :32, :32], cfg.mean, cfg.std))


def test_pretrain_mode_dataset(ssv2):
    raw, out, report = ssv2
    ds = VideoDataset(small_cfg("ssv2", out, report, num_sample=2), "pretrain")
    assert isinstance(ds.draw, PretrainDraw) and len(ds) == 12
    item = ds[0]
    assert item["frames"].dtype == torch.uint8 and len(item["params"]) == 2 and item["replaced"] == []
    assert ClipAugment(ds.cfg, "pretrain")(collate([item]), "cpu").shape == (2, 3, 8, 32, 32)
    with pytest.raises(ValueError, match="pretrain_scales"):
        DataConfig.preset("ssv2", pretrain_scales=[1.2])


# ---- datasets and loaders -----------------------------------------------------------------------
def test_train_items_repeated_augmentation(ssv2):
    raw, out, report = ssv2
    cfg = small_cfg("ssv2", out, report, num_sample=2)
    ds = VideoDataset(cfg, "train")
    assert len(ds) == 12 and isinstance(ds.draw, TrainDraw)
    item = ds[0]  # one decode (uint8, the sampled frames only), two draws of parameters
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape[0] == 8 and item["frames"].shape[-1] == 3
    assert len(item["params"]) == 2 and item["params"][0] != item["params"][1]
    assert item["label"].tolist() == [ds.samples[0][1]] * 2 and item["replaced"] == []
    batch = collate([ds[0], ds[5]])
    video = ClipAugment(cfg)(batch, "cpu")
    assert video.shape == (4, 3, 8, 32, 32) and not torch.equal(video[0], video[1])
    assert batch["label"].tolist() == [ds.samples[0][1]] * 2 + [ds.samples[5][1]] * 2
    assert batch["index"].tolist() == [0, 0, 5, 5]


def test_segment_and_dense_indices_used_by_dataset(ssv2, k400):
    ds = VideoDataset(small_cfg("ssv2", ssv2[1], ssv2[2], num_frames=16), "train")
    idx = ds.frame_indices(24, random.Random(0))
    assert len(idx) == 16 and np.all(np.diff(idx) == 1)  # 24 // 16 = 1 frame per segment
    dk = VideoDataset(small_cfg("k400", k400[1], k400[2], num_frames=16), "train")
    idx = dk.frame_indices(72, random.Random(0))
    assert len(idx) == 16 and idx[-1] - idx[0] == 63  # 16 frames over a 64-frame window
    assert dk.frame_indices(72, None, clip=4).tolist() == list(range(8, 72, 4))  # last test clip


def test_test_views_clips_times_crops(k400, ssv2):
    raw, out, report = k400
    cfg = small_cfg("k400", out, report)
    assert (cfg.test_clips, cfg.test_crops) == (5, 3)
    ds = VideoDataset(cfg, "test")
    assert len(ds) == 6 * 5  # one item per video and temporal clip; the crops are cut on the device
    items = [ds[i] for i in range(5)]
    assert [it["clip"] for it in items] == list(range(5)) and {it["video_index"] for it in items} == {0}
    assert all(it["label"] == ds.samples[0][1] and it["frames"].dtype == torch.uint8 for it in items)
    assert ds[5]["video_index"] == 1
    assert not torch.equal(items[0]["frames"], items[3]["frames"])  # another temporal clip
    video, video_index, view, label = EvalViews(cfg)(collate(items[:2]), "cpu")
    assert view.tolist() == [0, 1, 2, 3, 4, 5] and video.shape == (6, 3, 8, 32, 32)
    assert video_index.tolist() == [0] * 6 and label.tolist() == [ds.samples[0][1]] * 6
    s = VideoDataset(small_cfg("ssv2", ssv2[1], ssv2[2]), "test")
    assert len(s) == 8 * 2 and s.cfg.num_views == 6


def test_corrupt_video_error_survives_a_process_boundary():
    """Raised in a loader worker (or a decoding pool), the error is pickled: it comes back
    with its file, reason and category (a spawned NVDEC worker's error was lost before)."""
    import pickle

    from far.data.video import CorruptVideo

    err = pickle.loads(pickle.dumps(CorruptVideo("/data/a.webm", "cannot open on NVDEC: too small", "undecodable")))
    assert (err.path, err.reason, err.category) == ("/data/a.webm", "cannot open on NVDEC: too small", "undecodable")
    assert str(err) == "/data/a.webm: cannot open on NVDEC: too small"


def test_corrupt_video_at_run_time_is_reported_and_replaced(ssv2, tmp_path, caplog):
    raw, out, report = ssv2
    samples = read_list(out / "train.csv", report["video_root"])
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.webm"
    data = Path(samples[0][0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bad = [(str(empty), 0), (str(truncated), 1)]
    listed = samples[:2] + bad + samples[2:4]
    cfg = small_cfg("ssv2", out, report, num_sample=1)
    ds = VideoDataset(cfg, "train", samples=listed)
    with caplog.at_level(logging.WARNING, logger="far.data.dataset"):
        item = ds[2]
        # Deterministic replacement: the next index that decodes (here 4), with its own label.
        # Only the item's own video counts as replaced; the truncated one it stepped over
        # is item 3's.
        assert item["replaced"] == [(str(empty), "empty file (0 bytes)")]
        assert item["label"].tolist() == [listed[4][1]]
        assert str(empty) in caplog.text and str(truncated) in caplog.text
        loader = build_loader(ds, 3, train=False, seed=0)
        for _ in range(2):  # an epoch counts each corrupt video once
            replaced = [r for batch in loader for r in batch["replaced"]]
            assert [p for p, _ in replaced] == [str(empty), str(truncated)]
            assert replaced[1][1].startswith("truncated")
    # Logged once per video, however often it is met.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and str(empty) in messages[0] and str(truncated) in messages[1]
    test_ds = VideoDataset(cfg, "test", samples=listed)
    view = test_ds[3 * cfg.test_clips]  # first temporal clip of the truncated video
    assert view["video_index"] == 4 and [p for p, _ in view["replaced"]] == [str(truncated)]


def test_unreadable_test_videos_are_counted_once(ssv2, tmp_path, caplog):
    """far test: a corrupt video is met once per view (6 for SSv2). It must be listed once,
    in path order, and logged once."""
    from far.engine.evaluate import evaluate, gather, summarise
    from far.engine.metrics import ViewRecords

    raw, out, report = ssv2
    samples = read_list(out / "val.csv", report["video_root"])
    damaged = tmp_path / "b_damaged.webm"
    data = bytearray(Path(samples[0][0]).read_bytes())
    damaged.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    empty = tmp_path / "a_empty.webm"
    empty.write_bytes(b"")
    listed = [(str(damaged), 0)] + samples[:3] + [(str(empty), 1)] + samples[3:5]
    cfg = small_cfg("ssv2", out, report)
    ds = VideoDataset(cfg, "test", samples=listed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 32 * 32, cfg.num_classes))
    with caplog.at_level(logging.WARNING, logger="far.data.dataset"):
        merged, bad = evaluate(model, ds, rank=0, world_size=1, batch=4, num_workers=0,
                               device=torch.device("cpu"), dtype=torch.float32)
    assert [p for p, _ in bad] == [str(empty), str(damaged)]  # once each, sorted
    assert bad[0][1] == "empty file (0 bytes)" and bad[1][1].startswith("truncated")
    assert len(caplog.records) == 2  # one warning per video, not one per view (12)
    metrics = summarise(merged, bad, expected_videos=len(listed), clips=cfg.test_clips, crops=cfg.test_crops)
    assert metrics["videos"] == 5 and len(metrics["unreadable"]) == 2
    # The same video with two reasons (views failing differently) is still one video.
    _, dedup = gather(ViewRecords.concat([]), [("b", "r2"), ("a", "x"), ("b", "r1"), ("a", "x")])
    assert dedup == unique_videos([("b", "r1"), ("a", "x")]) == [("a", "x"), ("b", "r1")]


def test_loader_is_deterministic_with_a_seed(ssv2):
    raw, out, report = ssv2
    cfg = small_cfg("ssv2", out, report, num_sample=1)

    def batches(seed, workers=0):
        ds = VideoDataset(cfg, "train")
        loader = build_loader(ds, 4, train=True, seed=seed, num_workers=workers)
        return [(b["index"].tolist(), ClipAugment(cfg)(b, "cpu")) for b in loader]

    a, b, c = batches(1), batches(1), batches(2)
    assert len(a) == 3 and all(x[0] == y[0] and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert [x[0] for x in a] != [x[0] for x in c]
    w1, w2 = batches(1, workers=2), batches(1, workers=2)
    assert all(x[0] == y[0] and torch.equal(x[1], y[1]) for x, y in zip(w1, w2))
    loader = build_loader(VideoDataset(cfg, "train"), 4, train=True, seed=0, num_workers=2, pin_memory=True)
    assert loader.persistent_workers and loader.pin_memory


def test_mixup_attaches_to_train_batches(ssv2):
    raw, out, report = ssv2
    ds = VideoDataset(small_cfg("ssv2", out, report, num_sample=2), "train")
    batch = collate([ds[0], ds[1]])
    clips = ClipAugment(ds.cfg)(batch, "cpu")
    mixup = build_mixup(AugmentConfig(), num_classes=4)
    video, target = mixup(clips.clone(), batch["label"])
    assert video.shape == clips.shape and target.shape == (clips.shape[0], 4)
    assert torch.allclose(target.sum(1), torch.ones(target.shape[0]))
    assert build_mixup(AugmentConfig(mixup=0.0, cutmix=0.0), num_classes=4) is None


def test_cli_synth_and_prepare(tmp_path, capsys):
    code = data_main(["synth", "--kind", "k400", "--out", str(tmp_path / "raw"), "--classes", "2",
                      "--videos-per-class-train", "1", "--videos-per-class-val", "1", "--size", "32x64",
                      "--frames", "8", "--object-scale", "0.3", "--background-contrast", "0.2", "--quiet"])
    assert code == 0 and "2 train / 2 val videos (libx264)" in capsys.readouterr().out
    info = json.loads((tmp_path / "raw" / "synthetic.json").read_text())
    assert info["frames"] == 8 and info["object_scale"] == 0.3 and info["background_contrast"] == 0.2
    code = data_main(["prepare", "--dataset", "k400", "--root", str(tmp_path / "raw"), "--out",
                      str(tmp_path / "lists"), "--workers", "2", "--quiet"])
    assert code == 0 and "train: 2 listed of 2 annotated (0 missing, 0 unusable)" in capsys.readouterr().out


def test_decoded_cache_gives_the_same_items_and_keeps_its_budget(ssv2):
    """decoded_cache_mb: whole videos decoded once and sampled from memory give exactly the
    items of sampled decoding (train and test), and the cache holds at most its budget."""
    raw, out, report = ssv2
    plain = small_cfg("ssv2", out, report, num_sample=2)
    cached = dataclasses.replace(plain, decoded_cache_mb=64)
    a, b = VideoDataset(plain, "train"), VideoDataset(cached, "train")
    for i in (0, 3, 0):  # the second 0 comes from memory
        x, y = a[i], b[i]
        assert torch.equal(x["frames"], y["frames"]) and x["params"] == y["params"]
    assert len(b._decoded) == 2
    ta = VideoDataset(dataclasses.replace(plain, test_clips=2), "test")
    tb = VideoDataset(dataclasses.replace(cached, test_clips=2), "test")
    assert all(torch.equal(ta[i]["frames"], tb[i]["frames"]) for i in range(4))
    one_video = b._decoded[next(iter(b._decoded))].nbytes
    tiny = VideoDataset(dataclasses.replace(plain, decoded_cache_mb=1), "train")
    if one_video > 2**20:
        tiny[0]
        assert not tiny._decoded and len(tiny._too_large) == 1  # larger than the budget: not kept
    else:
        for i in range(len(tiny)):
            tiny[i]
        assert tiny._decoded_bytes <= 2**20 and len(tiny._decoded) < len(tiny)  # LRU within the budget
