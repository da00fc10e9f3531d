"""Embedded synthetic datasets in the OFFICIAL SSv2 and K400 layouts.

Why: the pipeline must run end to end (prepare -> load -> train -> test) without the
licensed data. The generated folders look like the real downloads, so
``far data prepare`` runs on them unchanged.

* synthetic-ssv2: VP9 ``.webm`` files in ``20bn-something-something-v2/`` with
  ``labels.json``/``train.json``/``validation.json``. Classes come in pairs that differ
  ONLY in temporal direction (left->right vs right->left, ...): a video of class B is
  rendered from the same kind of random scene as class A with time reversed, and the
  scene parameters are drawn from one class-independent distribution. Hence the
  multiset of frames of a video says nothing about which class of its pair it is; a
  model ignoring time order cannot beat chance within a pair (as on real SSv2).
* synthetic-k400: H.264 ``.mp4`` files ``{youtube_id}_{start:06d}_{end:06d}.mp4`` in
  ``train/``/``val/`` with ``train.csv``/``validate.csv``. Classes differ in appearance
  (shape, hue) AND motion (orbit, bounce, ...).

Each video's per-frame object masks (where the object's body is, from the pose the
renderer drew it at) are written next to the videos, ``masks/<video file stem>.npz``
(:func:`write_masks`, :func:`read_masks`): the ground truth of the localisation score of
``far explain``. ``far data prepare`` ignores them.

Everything is deterministic given the seed: each video's scene is drawn from a
generator seeded by (seed, dataset, split, class, number), and the encoders are set
up to give the same bytes for the same frames (far/data/encode.py: one thread, x264's
macroblock tree off, bit-exact muxing), so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from far.config import check_choice, fail
from far.data.encode import check_encoder, write_video
from far.data.layouts import strip_brackets

SSV2_VIDEO_DIR = "20bn-something-something-v2"

# (forward template, reversed template, motion name). The reversed class is the forward
# motion played backwards; templates follow the official "[something]" convention.
SSV2_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("Moving [something] from left to right", "Moving [something] from right to left", "horizontal"),
    ("Moving [something] up", "Moving [something] down", "vertical"),
    ("Pushing [something] towards the camera", "Pulling [something] away from the camera", "depth"),
    ("Making [something] appear", "Making [something] disappear", "opacity"),
    ("Rotating [something] clockwise", "Rotating [something] anticlockwise", "rotation"),
    ("Moving [something] from top left to bottom right", "Moving [something] from bottom right to top left",
     "diagonal"),
)

# K400-like classes: (name, shape, hue in degrees, motion). Appearance and motion both differ.
K400_CLASSES: tuple[tuple[str, str, float, str], ...] = (
    ("orbiting disc", "disc", 0.0, "orbit"),
    ("bouncing square", "square", 40.0, "bounce"),
    ("zigzagging triangle", "triangle", 80.0, "zigzag"),
    ("pulsing star", "star", 120.0, "pulse"),
    ("shaking pentagon", "pentagon", 160.0, "shake"),
    ("spinning cross", "cross", 200.0, "spin"),
    ("falling disc", "disc", 240.0, "fall"),
    ("waving square", "square", 280.0, "wave"),
    ("blinking star", "star", 320.0, "blink"),
    ("drifting triangle", "triangle", 20.0, "drift"),
    ("swinging pentagon", "pentagon", 100.0, "swing"),
    ("hopping cross", "cross", 300.0, "hop"),
)

# Named colours for the SSv2 placeholders ("red disc").
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)), ("green", (40, 190, 60)), ("blue", (40, 70, 220)),
    ("yellow", (235, 220, 40)), ("orange", (245, 140, 20)), ("purple", (150, 50, 190)),
    ("cyan", (40, 210, 220)), ("pink", (240, 120, 190)), ("white", (245, 245, 245)),
    ("black", (20, 20, 20)), ("brown", (130, 80, 40)), ("grey", (128, 128, 128)),
)
SHAPES = ("disc", "square", "triangle", "pentagon", "star", "cross")


# Frames per video by kind. SSv2-like: 32 frames (2.7 s at 12 fps; real SSv2 clips
# are 2-6 s at 12 fps) exceed the 16 segments. K400-like: 80 frames, more than the
# 64-frame dense window (16 x stride 4), so random training windows and the 5 test
# clips are really different clips, as on real K400 (300 frames).
DEFAULT_FRAMES = {"ssv2": 32, "k400": 80}


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: kind, class count, videos per class, frame size, length, fps, seed."""

    kind: str = "ssv2"
    classes: int = 10
    videos_per_class_train: int = 8
    videos_per_class_val: int = 4
    height: int = 96
    width: int = 128
    frames: int | None = None  # None: DEFAULT_FRAMES[kind]
    fps: int = 12
    seed: int = 0
    # Scene knobs (learnability at the CPU backbones' scale: 8x64x64 clips, 16-px patches).
    object_scale: float = 0.25  # object radius / min(H, W), jittered x0.85-1.15 per video
    background_contrast: float = 0.35  # background deviation from its mean colour (1 = full-range)
    motion_amplitude: float = 0.3  # K400: motion amplitude / min(H, W); SSv2: half the travel / frame extent
    motion_period: float = 24.0  # K400: frames per motion cycle (mean; jittered x0.75-1.25 per video)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("ssv2", "k400"))
        if self.frames is None:
            object.__setattr__(self, "frames", DEFAULT_FRAMES[self.kind])
        limit = 2 * len(SSV2_PAIRS) if self.kind == "ssv2" else len(K400_CLASSES)
        if not 2 <= self.classes <= limit:
            fail("classes", f"must be in [2, {limit}] for {self.kind} (got {self.classes})")
        if self.kind == "ssv2" and self.classes % 2:
            fail("classes", f"SSv2-like classes come in pairs, need an even number (got {self.classes})")
        for name in ("videos_per_class_train", "videos_per_class_val"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1 (got {getattr(self, name)})")
        for name, low in (("height", 16), ("width", 16), ("frames", 2), ("fps", 1)):
            if getattr(self, name) < low:
                fail(name, f"must be >= {low} (got {getattr(self, name)})")
        for name, low, high in (("object_scale", 0.02, 0.45), ("background_contrast", 0.0, 1.0),
                                ("motion_amplitude", 0.0, 0.45)):
            if not low <= getattr(self, name) <= high:
                fail(name, f"must be in [{low}, {high}] (got {getattr(self, name)})")
        if self.motion_period < 2:
            fail("motion_period", f"must be >= 2 frames (got {self.motion_period})")
        if self.height % 2 or self.width % 2:
            fail("height", f"height and width must be even for yuv420p (got {self.height}x{self.width})")

    def class_names(self) -> list[str]:
        """Class names in generation order (SSv2: with brackets removed, as in labels.json)."""
        if self.kind == "ssv2":
            names = [t for pair in SSV2_PAIRS for t in pair[:2]][: self.classes]
            return [strip_brackets(t) for t in names]
        return [c[0] for c in K400_CLASSES[: self.classes]]


# --------------------------------------------------------------------------- drawing


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (N, 2) of a shape of radius ~1 centred on 0 (y down)."""
    if shape == "disc":
        a = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape in ("square", "triangle", "pentagon"):
        n = {"square": 4, "triangle": 3, "pentagon": 5}[shape]
        a = np.linspace(0, 2 * math.pi, n, endpoint=False) - math.pi / 2
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "star":
        a = np.linspace(0, 2 * math.pi, 10, endpoint=False) - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "cross":
        w = 0.35
        return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                         (-w, w), (-1, w), (-1, -w), (-w, -w)], dtype=float)
    raise ValueError(f"unknown shape {shape!r}")


def _fill_polygon(mask: np.ndarray, verts: np.ndarray) -> None:
    """Set ``mask`` True inside polygon ``verts`` (even-odd rule, pixel centres)."""
    h, w = mask.shape
    x0, y0 = np.floor(verts.min(0)).astype(int)
    x1, y1 = np.ceil(verts.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    py, px = np.mgrid[y0:y1, x0:x1].astype(float) + 0.5
    inside = np.zeros(py.shape, dtype=bool)
    xs, ys = verts[:, 0], verts[:, 1]
    for i in range(len(verts)):
        xa, ya, xb, yb = xs[i], ys[i], xs[i - 1], ys[i - 1]
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        inside ^= crosses & (px < (xb - xa) * (py - ya) / (yb - ya) + xa)
    mask[y0:y1, x0:x1] |= inside


@dataclass(frozen=True)
class Pose:
    """Object state in one frame: centre (px), radius (px), angle (rad, clockwise), opacity."""

    cx: float
    cy: float
    radius: float
    angle: float
    alpha: float


def _rotation(pose: Pose) -> np.ndarray:
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    return np.array([[c, -s], [s, c]])  # y points down, so a positive angle turns clockwise


def object_mask(shape: str, pose: Pose, h: int, w: int) -> np.ndarray:
    """(h, w) bool: the pixels the object's body covers at ``pose`` (whatever its opacity);
    exactly the region :func:`draw_frame` paints."""
    body = np.zeros((h, w), dtype=bool)
    _fill_polygon(body, _unit_polygon(shape) @ _rotation(pose).T * pose.radius + np.array([pose.cx, pose.cy]))
    return body


def draw_frame(background: np.ndarray, shape: str, colour: np.ndarray, marker: np.ndarray, pose: Pose) -> np.ndarray:
    """Background with the object drawn at ``pose``; the marker dot makes rotation visible."""
    h, w = background.shape[:2]
    rot = _rotation(pose)
    centre = np.array([pose.cx, pose.cy])
    body = object_mask(shape, pose, h, w)
    dot = np.zeros((h, w), dtype=bool)
    a = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    dot_poly = np.stack([np.cos(a), np.sin(a)], 1) * max(pose.radius * 0.25, 1.2)
    _fill_polygon(dot, dot_poly + centre + rot @ np.array([0.55 * pose.radius, 0.0]))
    out = background.astype(np.float32)
    for m, col in ((body, colour), (dot & body, marker)):
        out[m] = (1 - pose.alpha) * out[m] + pose.alpha * col.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, h: int, w: int, contrast: float = 1.0) -> np.ndarray:
    """A random static background: solid, gradient, stripes or soft blobs.

    ``contrast`` scales every pixel's deviation from the background's mean colour
    (texture and noise alike): 1 keeps the full-range textures, smaller values keep the
    variety of layouts and colours but make the object the most salient thing in view.
    """
    kind = rng.integers(4)
    c1, c2 = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        img = np.broadcast_to(c1, (h, w, 3)).copy()
    elif kind == 1:
        theta = rng.uniform(0, 2 * math.pi)
        proj = (xx * math.cos(theta) + yy * math.sin(theta))
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 2:
        period = rng.uniform(8, 24)
        theta = rng.uniform(0, math.pi)
        t = (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0)
        img = np.where(t[..., None], c1, c2)
    else:
        img = np.broadcast_to(c1, (h, w, 3)).copy()
        for _ in range(3):
            bx, by, br = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.15, 0.4) * min(h, w)
            g = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * br**2))[..., None]
            img = img * (1 - g) + rng.integers(0, 256, 3).astype(np.float32) * g
    # Mild pixel noise (static) so backgrounds are not trivially flat.
    img = img + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    # numpy's SIMD float sums can differ in the last bit with the buffer's alignment;
    # rounding the mean keeps the same seed giving the same pixels (and the same bytes).
    mean = np.round(img.reshape(-1, 3).mean(0, dtype=np.float64), 2).astype(np.float32)
    img = mean + contrast * (img - mean)
    return np.clip(img, 0, 255).astype(np.uint8)


def _contrasting(rng: np.random.Generator, background: np.ndarray, choices: Sequence[int]) -> int:
    """Pick a palette index far enough from the background's mean colour."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        i = int(rng.choice(choices))
        if np.abs(np.array(PALETTE[i][1]) - mean).sum() > 150:
            return i
    return i


# --------------------------------------------------------------------------- SSv2-like


@dataclass(frozen=True)
class SSv2Scene:
    """Class-independent random scene of one SSv2-like video."""

    background: np.ndarray
    shape: str
    colour_index: int
    marker: tuple[int, int, int]
    radius: float  # fraction of min(H, W)
    static_xy: tuple[float, float]  # fractions of (W, H)
    lo: float
    hi: float  # motion extent fractions
    s_lo: float
    s_hi: float  # size range for towards/away
    angle0: float
    span: float  # rotation amount

    @property
    def placeholder(self) -> str:
        return f"{PALETTE[self.colour_index][0]} {self.shape}"


def sample_ssv2_scene(rng: np.random.Generator, h: int, w: int, object_scale: float = 0.25,
                      background_contrast: float = 0.35, motion_amplitude: float = 0.3) -> SSv2Scene:
    """Draw a scene. The distribution does not depend on the class (pair property).

    Defaults are :class:`SynthSpec`'s: object radius ``object_scale`` x min(H, W)
    (x0.85-1.15), moving classes travel ``2 x motion_amplitude`` (x0.8-1.2) of the
    frame's extent, centred with a little jitter.
    """
    bg = make_background(rng, h, w, background_contrast)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    ci = _contrasting(rng, bg, range(len(PALETTE)))
    half = motion_amplitude * float(rng.uniform(0.8, 1.2))
    centre = 0.5 + float(rng.uniform(-0.05, 0.05))
    return SSv2Scene(
        background=bg, shape=shape, colour_index=ci,
        marker=tuple(int(v) for v in 255 - np.array(PALETTE[ci][1])),
        radius=object_scale * float(rng.uniform(0.85, 1.15)),
        static_xy=(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.4, 0.6))),
        lo=centre - half, hi=centre + half,
        s_lo=float(rng.uniform(0.4, 0.6)), s_hi=float(rng.uniform(1.3, 1.6)),
        angle0=float(rng.uniform(0, 2 * math.pi)), span=float(rng.uniform(0.5, 1.5) * math.pi),
    )


def ssv2_pose(scene: SSv2Scene, motion: str, t: float, h: int, w: int) -> Pose:
    """Pose of the forward class of pair ``motion`` at time ``t`` in [0, 1]."""
    m = min(h, w)
    lerp = lambda a, b: a + (b - a) * t  # noqa: E731
    cx, cy = scene.static_xy[0] * w, scene.static_xy[1] * h
    radius, angle, alpha = scene.radius * m, scene.angle0, 1.0
    if motion == "horizontal":
        cx = lerp(scene.lo, scene.hi) * w
    elif motion == "vertical":
        cy = lerp(scene.hi, scene.lo) * h  # up = decreasing y
    elif motion == "depth":
        radius = scene.radius * m * lerp(scene.s_lo, scene.s_hi)
    elif motion == "opacity":
        alpha = t
    elif motion == "rotation":
        angle = scene.angle0 + scene.span * t
    elif motion == "diagonal":
        cx, cy = lerp(scene.lo, scene.hi) * w, lerp(scene.lo, scene.hi) * h
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return Pose(cx, cy, radius, angle, alpha)


def render_ssv2(scene: SSv2Scene, class_index: int, frames: int) -> np.ndarray:
    """Frames (F, H, W, 3) of ``scene`` for SSv2-like class ``class_index``.

    Class 2k is pair k played forward, class 2k+1 the same motion with time reversed,
    so ``render_ssv2(s, 2k+1, F) == render_ssv2(s, 2k, F)[::-1]`` exactly.
    """
    colour = np.array(PALETTE[scene.colour_index][1])
    return np.stack([draw_frame(scene.background, scene.shape, colour, np.array(scene.marker), pose)
                     for pose in ssv2_poses(scene, class_index, frames)])


def ssv2_poses(scene: SSv2Scene, class_index: int, frames: int) -> list[Pose]:
    """The object's pose in each of the ``frames`` frames of :func:`render_ssv2`."""
    h, w = scene.background.shape[:2]
    motion = SSV2_PAIRS[class_index // 2][2]
    reverse = class_index % 2 == 1
    out = []
    for i in range(frames):
        t = i / (frames - 1)
        # Exact reversal: frame i of the reversed class is frame F-1-i of the forward one.
        t = (frames - 1 - i) / (frames - 1) if reverse else t
        out.append(ssv2_pose(scene, motion, t, h, w))
    return out


# --------------------------------------------------------------------------- K400-like


def render_k400(rng: np.random.Generator, class_index: int, frames: int, h: int, w: int,
                object_scale: float = 0.25, background_contrast: float = 0.35, motion_amplitude: float = 0.3,
                motion_period: float = 24.0) -> np.ndarray:
    """Frames of a K400-like video of ``class_index``: class shape/hue and class motion.

    The motion runs at a speed per frame (one cycle per ~``motion_period`` frames),
    not per clip, so that any sampled window shows it whatever the video length;
    one-way motions (fall, wave, hop, drift) restart every two cycles.
    """
    return k400_video(rng, class_index, frames, h, w, object_scale, background_contrast, motion_amplitude,
                      motion_period)[0]


def k400_video(rng: np.random.Generator, class_index: int, frames: int, h: int, w: int,
               object_scale: float = 0.25, background_contrast: float = 0.35, motion_amplitude: float = 0.3,
               motion_period: float = 24.0) -> tuple[np.ndarray, str, list[Pose]]:
    """:func:`render_k400`'s frames, with the object's shape and its pose in each frame
    (the same draws from ``rng``, so the same frames)."""
    import colorsys

    _, shape, hue, motion = K400_CLASSES[class_index]
    hue = (hue + rng.uniform(-12, 12)) % 360
    colour = np.array(colorsys.hsv_to_rgb(hue / 360, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))) * 255
    # A background whose mean colour is far from the object's (a few deterministic redraws).
    for _ in range(8):
        bg = make_background(rng, h, w, background_contrast)
        if np.abs(np.round(bg.reshape(-1, 3).mean(0, dtype=np.float64), 2) - colour).sum() > 150:
            break
    marker = 255 - colour
    m = min(h, w)
    r = object_scale * rng.uniform(0.85, 1.15) * m
    cx0, cy0 = rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h
    phase = rng.uniform(0, 2 * math.pi)
    period = motion_period * rng.uniform(0.75, 1.25)  # frames per cycle
    amp = motion_amplitude * rng.uniform(0.8, 1.2) * m
    direction = rng.choice([-1.0, 1.0])
    out, poses = [], []
    for i in range(frames):
        cyc = i / period  # cycles elapsed
        t = (cyc / 2 + phase / (2 * math.pi)) % 1.0  # sawtooth in [0, 1): one sweep per two cycles
        wt = 2 * math.pi * cyc + phase
        cx, cy, rad, ang, alpha = cx0, cy0, r, phase, 1.0
        if motion == "orbit":
            cx, cy = cx0 + amp * math.cos(wt), cy0 + amp * math.sin(wt)
        elif motion == "bounce":
            cy = cy0 + amp - 2 * amp * abs(math.sin(wt / 2))
        elif motion == "zigzag":
            cx = cx0 + amp * (2 * abs((cyc * 2 + phase / math.pi) % 2 - 1) - 1)
            cy = cy0 + amp * (t - 0.5)
        elif motion == "pulse":
            rad = r * (1 + 0.5 * math.sin(wt))
        elif motion == "shake":
            cx = cx0 + 0.4 * amp * math.sin(3 * wt)
        elif motion == "spin":
            ang = phase + direction * math.pi * cyc
        elif motion == "fall":
            cy = (0.15 + 0.7 * t * t) * h
        elif motion == "wave":
            cx, cy = (0.15 + 0.7 * t) * w, cy0 + amp * math.sin(wt)
        elif motion == "blink":
            alpha = 0.5 + 0.5 * math.cos(2 * wt)
        elif motion == "drift":
            cx, cy = cx0 + direction * 2 * amp * (t - 0.5), cy0 - 2 * amp * (t - 0.5)
        elif motion == "swing":
            ang = phase + 0.8 * math.sin(wt)
            cx = cx0 + amp * math.sin(wt)
        elif motion == "hop":
            cx = (0.2 + 0.6 * t) * w
            cy = cy0 + amp * 0.5 - amp * abs(math.sin(2 * wt))
        poses.append(Pose(cx, cy, rad, ang, alpha))
        out.append(draw_frame(bg, shape, colour, marker, poses[-1]))
    return np.stack(out), shape, poses


# --------------------------------------------------------------------------- object masks

# Each video's per-frame object masks, a side file next to the videos:
# ``<dataset>/masks/<video file stem>.npz``. ``far data prepare`` never looks there (it
# reads the annotation lists and the video folders only), so the lists are unchanged.
MASK_DIR = "masks"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed entry time: the same masks give the same bytes


@dataclass(frozen=True)
class ObjectMasks:
    """A video's object masks ``(F, H, W)`` bool and poses ``(F, 5)``: cx, cy, radius (px),
    angle (rad), alpha (opacity; the mask is the body's region even where alpha is 0)."""

    masks: np.ndarray
    poses: np.ndarray


def object_masks(shape: str, poses: Sequence[Pose], h: int, w: int) -> np.ndarray:
    """(F, h, w) bool: :func:`object_mask` of each pose."""
    return np.stack([object_mask(shape, p, h, w) for p in poses])


def mask_path(root: str | Path, video: str | Path) -> Path:
    """Where the masks of ``video`` (a path or a file stem) of the dataset at ``root`` are."""
    return Path(root) / MASK_DIR / f"{Path(video).stem}.npz"


def find_masks(video: str | Path, levels: int = 3) -> Path | None:
    """The mask file of ``video`` in the dataset folder above it (the videos sit one or two
    folders below the dataset root), or None."""
    for parent in list(Path(video).parents)[:levels]:
        candidate = mask_path(parent, video)
        if candidate.is_file():
            return candidate
    return None


def write_masks(path: str | Path, masks: np.ndarray, poses: Sequence[Pose]) -> Path:
    """Write ``masks`` (F, H, W) bool bit-packed with ``poses`` as an .npz that
    ``np.load`` reads; deterministic bytes (np.savez stamps the current time)."""
    import io
    import zipfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"bits": np.packbits(masks.astype(bool), axis=-1),
              "size": np.array(masks.shape, dtype=np.int64),
              "poses": np.array([[p.cx, p.cy, p.radius, p.angle, p.alpha] for p in poses], dtype=np.float32)}
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), buf.getvalue(),
                        compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(path)
    return path


def read_masks(path: str | Path) -> ObjectMasks:
    """The :class:`ObjectMasks` written by :func:`write_masks`."""
    with np.load(path, allow_pickle=False) as z:
        f, h, w = (int(v) for v in z["size"])
        masks = np.unpackbits(z["bits"], axis=-1, count=w).astype(bool).reshape(f, h, w)
        return ObjectMasks(masks, z["poses"].astype(np.float32))


# --------------------------------------------------------------------------- writers


def _video_rng(spec: SynthSpec, split: str, class_index: int, number: int) -> np.random.Generator:
    # One independent stream per video: changing the class count or videos per class
    # does not change the videos that remain.
    kind_code = {"ssv2": 1, "k400": 2}[spec.kind]
    split_code = {"train": 0, "val": 1}[split]
    return np.random.default_rng([spec.seed, kind_code, split_code, class_index, number])


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 11))


def generate(spec: SynthSpec, out: str | Path, progress: bool = True, workers: int = 1) -> dict:
    """Write the synthetic dataset of ``spec`` under ``out`` in the official layout, with
    ``workers`` encoding processes (each video is a pure function of its job: the files are
    the same for any number).

    Returns a summary dict (also written to ``out/synthetic.json``). Raises
    :class:`far.data.encode.EncoderUnavailable` if PyAV lacks the needed encoder.
    """
    from tqdm import tqdm

    out = Path(out)
    codec = "libvpx-vp9" if spec.kind == "ssv2" else "libx264"
    check_encoder(codec)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(split, c, n) for split, per in (("train", spec.videos_per_class_train), ("val", spec.videos_per_class_val))
            for c in range(spec.classes) for n in range(per)]
    writer: Callable[[str, int, int], dict] = _write_ssv2_video if spec.kind == "ssv2" else _write_k400_video
    desc = f"synthetic-{spec.kind}"
    if workers <= 1:
        records = [writer(spec, out, job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    else:
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        with ProcessPoolExecutor(max_workers=workers) as pool:
            records = list(tqdm(pool.map(partial(writer, spec, out), jobs, chunksize=2), total=len(jobs), desc=desc,
                                disable=not progress))
    _check_decodable(spec, next(out.glob(f"{SSV2_VIDEO_DIR}/*.webm" if spec.kind == "ssv2" else "train/*.mp4")))
    if spec.kind == "ssv2":
        _write_ssv2_annotations(spec, out, records)
    else:
        _write_k400_annotations(out, records)
    summary = {"kind": spec.kind, "codec": codec, "classes": spec.class_names(),
               "videos": {s: sum(r["split"] == s for r in records) for s in ("train", "val")},
               "size": [spec.height, spec.width], "frames": spec.frames, "fps": spec.fps, "seed": spec.seed,
               "object_scale": spec.object_scale, "background_contrast": spec.background_contrast,
               "motion_amplitude": spec.motion_amplitude, "motion_period": spec.motion_period,
               "masks": f"{MASK_DIR}/<video file stem>.npz"}
    (out / "synthetic.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_decodable(spec: SynthSpec, path: Path) -> None:
    """Fail loudly if the loader's decoder cannot read what was written.

    decord 0.6 cannot return frames of some small widths (seen here: 16, 24, 48 and 72
    px, any height); a dataset of those would be reported unusable video by video.
    """
    from far.data.video import CorruptVideo, probe

    try:
        probe(path)
    except CorruptVideo as err:
        raise ValueError(f"SynthSpec.width/height: decord cannot read the generated {spec.height}x{spec.width} "
                         f"videos ({err.reason}); decord 0.6 fails on some small widths (16, 24, 48, 72): "
                         "choose another size") from err


def _write_ssv2_video(spec: SynthSpec, out: Path, job: tuple[str, int, int]) -> dict:
    split, c, n = job
    rng = _video_rng(spec, split, c, n)
    scene = sample_ssv2_scene(rng, spec.height, spec.width, spec.object_scale, spec.background_contrast,
                              spec.motion_amplitude)
    # SSv2 ids are integers; unique per (split, class, number).
    vid = str(1 + {"train": 0, "val": 500000}[split] + c * 10000 + n)
    frames = render_ssv2(scene, c, spec.frames)
    write_video(out / SSV2_VIDEO_DIR / f"{vid}.webm", frames, spec.fps, "libvpx-vp9")
    poses = ssv2_poses(scene, c, spec.frames)
    write_masks(mask_path(out, vid), object_masks(scene.shape, poses, spec.height, spec.width), poses)
    template = [t for pair in SSV2_PAIRS for t in pair[:2]][c]
    return {"split": split, "id": vid, "template": template, "placeholder": scene.placeholder}


def _write_ssv2_annotations(spec: SynthSpec, out: Path, records: list[dict]) -> None:
    names = spec.class_names()
    # Official labels.json: class name -> id as a string, ids in alphabetical order.
    labels = {name: str(i) for i, name in enumerate(sorted(names))}
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    for split, fname in (("train", "train.json"), ("val", "validation.json")):
        entries = [{"id": r["id"],
                    "label": strip_brackets(r["template"].replace("[something]", r["placeholder"])),
                    "template": r["template"], "placeholders": [r["placeholder"]]}
                   for r in records if r["split"] == split]
        (out / fname).write_text(json.dumps(entries, indent=1) + "\n")


def _write_k400_video(spec: SynthSpec, out: Path, job: tuple[str, int, int]) -> dict:
    split, c, n = job
    rng = _video_rng(spec, split, c, n)
    ytid = _youtube_id(rng)
    start = int(rng.integers(0, 300))
    end = start + 10
    frames, shape, poses = k400_video(rng, c, spec.frames, spec.height, spec.width, spec.object_scale,
                                      spec.background_contrast, spec.motion_amplitude, spec.motion_period)
    name = f"{ytid}_{start:06d}_{end:06d}"
    write_video(out / split / f"{name}.mp4", frames, spec.fps, "libx264")
    write_masks(mask_path(out, name), object_masks(shape, poses, spec.height, spec.width), poses)
    return {"split": split, "label": K400_CLASSES[c][0], "youtube_id": ytid, "time_start": start, "time_end": end}


def _write_k400_annotations(out: Path, records: list[dict]) -> None:
    import csv

    for split, fname in (("train", "train.csv"), ("val", "validate.csv")):
        with open(out / fname, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for r in records:
                if r["split"] == split:
                    writer.writerow([r["label"], r["youtube_id"], r["time_start"], r["time_end"], split])
