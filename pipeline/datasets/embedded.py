"""The embedded dataset: procedural scenes in which only context tells twin classes apart.

Generated from ``params.data.embedded`` (no download) in the canonical layout
``{train,val}/{images,labels}/<stem>.png`` + ``classes.csv`` (id,name), plus
``scenes.csv`` (stem,split,scene) for analysis. Every pixel is labelled: the
label maps hold ids 0..23, never the ignore index 255.

Why it exists. GRAr (section 3.2) pays off where a class is ambiguous in its
neighbourhood but not given the other classes of the image: "pillow" is
supported by "bed" and opposed by "bus" (Eq. 1-3). Here that is the whole game.

- **Scenes** (``SCENES``): bedroom, pasture, harbour, street; one per image,
  cycling, so a split is balanced. An image is a panoramic strip: a far band
  across the top (wall / sky / haze / facade), a ground below it (floor /
  grass / water / road), one *unique* object (wardrobe / tractor / seagull /
  person) and 3-5 *twin* objects standing on the ground anywhere along the
  strip, painted back to front. Heights, sizes and rows are fractions of the
  image height; columns are uniform over the width.
- **Appearances** (``APPEARANCES``): a texture (two colours mixed by stripes,
  checks, dots or smooth noise, random phase, slight colour shift) and, for
  objects, a shape distribution (irregular superellipse blobs). Per-image
  lighting (gain, colour cast, gradient) and pixel noise keep single pixels
  ambiguous between some classes; a few pixels of neighbourhood separate every
  pair of distinct appearances.
- **Twins** (``TWINS``): classes of different scenes drawn from the very same
  appearance, shape distribution included. The far band and the ground are
  4-way twins (wall = sky = haze = facade, floor = grass = water = road); the
  three twin objects of a scene pair it with each of the other three scenes
  (pillow = rock, lamp = buoy, bed = car, cow = boat, sheep = bollard,
  container = bus). 20 of the 24 classes are twins: locally, only the unique
  object says which scene this is.
- **Context.** What names the scene is the unique object, somewhere along the
  strip, and the combination of twin objects (two different twin appearances
  always name one scene). Both are evidence a few per cent of the pixels
  carry, to be gathered over the whole image. The default strip (32 x 192)
  is wider than the receptive field of the embedded profile's backbone and
  FCN head (``tiny_resnet`` + FCN: 131 pixels, measured by gradient in the tests), so for many
  pixels that evidence lies out of an FCN's sight, as it does in the paper's
  512-pixel crops for the far parts of a scene: a module that pools regions
  over the whole image (GRAr's nodes, a pyramid pooling) sees it, a plain FCN
  cannot. (Square 64 x 64 images, which the receptive field covers, let an
  FCN resolve almost every twin: the context gap then closes.) Classes of
  different scenes never co-occur; the classes of one scene co-occur in most
  images, so the statistics of Eq. 1 are block-diagonal over the scenes and a
  twin's supporters are exactly the classes that disambiguate it.

``local_only_ceiling`` gives the best scores without context (0.38 mIoU
and 0.31 pixel accuracy on the default val split; an oracle that knows the scene
can reach 1); ``twin_confusion`` measures how much of a model's error is
context error. Train on whole images (crop size = image size) and without
scale augmentation that crops: a crop that loses the unique object loses the cue.

Deterministic: image ``i`` of split ``s`` is drawn from its own
``numpy.random.default_rng((seed, s, i))``, so the same params give
byte-identical files whatever ``data.workers``, and growing ``train_images``
keeps the existing images.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from pipeline.config import Params, hw
from pipeline.datasets.common import make_layout, run_tasks
from pipeline.datasets.layout import SPLITS

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Texture:
    """Two colours mixed by ``pattern`` (a key of ``PATTERNS``) of ``period`` pixels, rotated by ``angle`` degrees."""

    pattern: str
    colours: tuple[Colour, Colour]
    period: float
    angle: float = 0.0


@dataclass(frozen=True)
class Shape:
    """Object blob: a superellipse of exponent ``power`` with an irregular outline.

    ``radius`` is a range of fractions of the image size; ``aspect`` a range of
    width / height before rotation (area-preserving); ``rotation`` the largest
    tilt in degrees; ``wobble`` the largest amplitude of the random harmonics
    of the outline.
    """

    power: float
    radius: tuple[float, float]
    aspect: tuple[float, float]
    rotation: float
    wobble: float


@dataclass(frozen=True)
class Appearance:
    """What a class looks like: a texture, and a shape for objects (``None`` for stuff)."""

    texture: Texture
    shape: Shape | None = None


@dataclass(frozen=True)
class Scene:
    """A scene type's classes (full names): far band, ground, twin objects, unique object."""

    far: str
    ground: str
    twins: tuple[str, ...]
    unique: str

    @property
    def classes(self) -> tuple[str, ...]:
        return (self.far, self.ground, *self.twins, self.unique)


def _shape(
    power: float, radius: tuple[float, float], aspect: tuple[float, float], rotation: float = 15.0, wobble: float = 0.08
) -> Shape:
    """A ``Shape`` with the tilt and wobble most objects share."""
    return Shape(power, radius, aspect, rotation, wobble)


# Appearance name -> appearance. Twins are classes mapped to the same name below.
APPEARANCES: Mapping[str, Appearance] = MappingProxyType(
    {
        # stuff: every scene's far band and ground are 4-way twins
        "band": Appearance(Texture("noise", ((0.55, 0.74, 0.95), (0.86, 0.92, 1.00)), 10)),
        "ground": Appearance(Texture("noise", ((0.50, 0.46, 0.40), (0.64, 0.59, 0.50)), 6)),
        # twin objects: each shared by two scenes, one appearance per pair of scenes
        "soft_round": Appearance(
            Texture("dots", ((0.95, 0.95, 0.95), (0.72, 0.60, 0.86)), 4), _shape(2.0, (0.22, 0.28), (1.0, 1.5), 30)
        ),
        "glow": Appearance(
            Texture("noise", ((1.00, 0.50, 0.00), (1.00, 0.66, 0.15)), 3), _shape(2.0, (0.22, 0.26), (0.9, 1.2))
        ),
        "long_box": Appearance(
            Texture("stripes", ((0.75, 0.12, 0.12), (0.96, 0.45, 0.40)), 5, 45),
            _shape(4.0, (0.26, 0.32), (1.8, 2.4), 10),
        ),
        "hide": Appearance(
            Texture("checks", ((0.08, 0.08, 0.08), (0.92, 0.92, 0.92)), 4), _shape(2.5, (0.24, 0.30), (1.6, 2.2))
        ),
        "fluff": Appearance(
            Texture("noise", ((1.00, 0.94, 0.15), (0.86, 0.76, 0.04)), 4),
            _shape(2.0, (0.20, 0.24), (1.0, 1.3), 30, 0.15),
        ),
        "long_rect": Appearance(
            Texture("stripes", ((0.10, 0.45, 0.20), (0.28, 0.72, 0.36)), 3, 0), _shape(6.0, (0.26, 0.30), (2.2, 3.0), 5)
        ),
        # unique objects: one per scene, the small cue that names it
        "wardrobe": Appearance(
            Texture("stripes", ((0.35, 0.05, 0.55), (0.58, 0.22, 0.78)), 4, 90),
            _shape(6.0, (0.20, 0.24), (0.5, 0.7), 5),
        ),
        "tractor": Appearance(
            Texture("stripes", ((0.08, 0.58, 0.68), (0.04, 0.32, 0.40)), 4, -45), _shape(3.0, (0.20, 0.24), (1.2, 1.6))
        ),
        "seagull": Appearance(
            Texture("noise", ((0.08, 0.12, 0.50), (0.20, 0.30, 0.75)), 3), _shape(2.0, (0.20, 0.24), (1.4, 1.8), 20)
        ),
        "person": Appearance(
            Texture("stripes", ((1.00, 0.45, 0.85), (0.20, 0.05, 0.20)), 4, 0),
            _shape(2.5, (0.20, 0.24), (0.55, 0.75), 10),
        ),
    }
)

# Scene -> (far band, ground, twin objects, unique object) as (class short name, appearance name).
_SCENE_TABLE = (
    (
        "bedroom",
        ("wall", "band"),
        ("floor", "ground"),
        (("pillow", "soft_round"), ("lamp", "glow"), ("bed", "long_box")),
        ("wardrobe", "wardrobe"),
    ),
    (
        "pasture",
        ("sky", "band"),
        ("grass", "ground"),
        (("rock", "soft_round"), ("cow", "hide"), ("sheep", "fluff")),
        ("tractor", "tractor"),
    ),
    (
        "harbour",
        ("haze", "band"),
        ("water", "ground"),
        (("buoy", "glow"), ("boat", "hide"), ("container", "long_rect")),
        ("seagull", "seagull"),
    ),
    (
        "street",
        ("facade", "band"),
        ("road", "ground"),
        (("car", "long_box"), ("bollard", "fluff"), ("bus", "long_rect")),
        ("person", "person"),
    ),
)

# Class name ("scene.thing") -> appearance name, in class-id order (per scene: far, ground, twins, unique).
CLASS_APPEARANCE: Mapping[str, str] = MappingProxyType(
    {
        f"{scene}.{thing}": appearance
        for scene, far, ground, twins, unique in _SCENE_TABLE
        for thing, appearance in (far, ground, *twins, unique)
    }
)
# Class names in id order: ids 0..K-1 of classes.csv and of the label maps.
CLASSES: tuple[str, ...] = tuple(CLASS_APPEARANCE)
SCENES: Mapping[str, Scene] = MappingProxyType(
    {
        scene: Scene(
            f"{scene}.{far[0]}", f"{scene}.{ground[0]}", tuple(f"{scene}.{t}" for t, _ in twins), f"{scene}.{unique[0]}"
        )
        for scene, far, ground, twins, unique in _SCENE_TABLE
    }
)
# Groups of classes (>= 2, from different scenes) drawn from one appearance, in id order.
TWINS: tuple[tuple[str, ...], ...] = tuple(
    group
    for group in (
        tuple(c for c in CLASSES if CLASS_APPEARANCE[c] == name) for name in dict.fromkeys(CLASS_APPEARANCE.values())
    )
    if len(group) > 1
)

# Layout, as fractions of the image size.
FAR_BAND = (0.14, 0.22)  # mean height of the far band, uniform
FAR_WAVE = 0.04  # largest amplitude of its wavy lower edge
OBJECT_ROWS = (0.40, 0.92)  # object centres: rows uniform in this range (columns anywhere)
TWIN_OBJECTS = (3, 5)  # twin objects per image, uniform, inclusive; plus one unique object
# Photometric jitter.
GAIN = (0.8, 1.2)  # per-image brightness gain, uniform
CAST = 0.05  # std of the per-image, per-channel gain
GRADIENT = 0.15  # largest brightness change across the image
NOISE = 0.04  # std of the per-pixel noise
COLOUR_JITTER = 0.02  # std of the per-region colour shift


def class_id(name: str) -> int:
    """The id of class ``name``: its row in classes.csv and its value in the label maps."""
    return CLASSES.index(name)


def scene_of(index: int) -> str:
    """The scene of image ``index`` of any split: scenes cycle, so splits are balanced."""
    return tuple(SCENES)[index % len(SCENES)]


def _stripes(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(0.5 + 2.0 * np.sin(2 * np.pi * u), 0.0, 1.0)


def _checks(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(0.5 + 2.0 * np.sin(np.pi * u) * np.sin(np.pi * v), 0.0, 1.0)


def _dots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    du, dv = u - np.round(u), v - np.round(v)
    return (du * du + dv * dv < 0.09).astype(np.float32)


def _noise(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Value noise: uniform values on the integer lattice of (u, v), bilinearly interpolated."""
    u0, v0 = np.floor(u), np.floor(v)
    iu, iv = (u0 - u0.min()).astype(np.intp), (v0 - v0.min()).astype(np.intp)
    grid = rng.random((int(iu.max()) + 2, int(iv.max()) + 2), dtype=np.float32)
    fu, fv = u - u0, v - v0
    top = grid[iu, iv] * (1 - fv) + grid[iu, iv + 1] * fv
    bottom = grid[iu + 1, iv] * (1 - fv) + grid[iu + 1, iv + 1] * fv
    return top * (1 - fu) + bottom * fu


# Pattern name -> mix in [0, 1] of the two colours, from coordinates in periods (u across, v along).
PATTERNS: Mapping[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = MappingProxyType(
    {
        "stripes": _stripes,
        "checks": _checks,
        "dots": _dots,
        "noise": _noise,
    }
)


def texture(spec: Texture, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(height, width, 3)`` float patch of ``spec`` with a random phase and colour shift."""
    pattern = PATTERNS.get(spec.pattern)
    if pattern is None:
        raise ValueError(f"unknown texture pattern {spec.pattern!r}; valid: {', '.join(PATTERNS)}")
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)  # (2, H, W)
    y += rng.uniform(0, 64)
    x += rng.uniform(0, 64)
    cos, sin = np.cos(np.deg2rad(spec.angle)), np.sin(np.deg2rad(spec.angle))
    mix = pattern((x * cos + y * sin) / spec.period, (y * cos - x * sin) / spec.period, rng)  # (H, W)
    lo, hi = (np.asarray(c, np.float32) + rng.normal(0, COLOUR_JITTER, 3).astype(np.float32) for c in spec.colours)
    return lo + (hi - lo) * mix[..., None]  # (H, W, 3)


def blob(shape: Shape, height: int, width: int, cy: float, cx: float, rng: np.random.Generator) -> np.ndarray:
    """A ``(height, width)`` boolean mask of one object of ``shape`` centred at pixel (cy, cx).

    Sizes scale with ``height``.
    """
    radius = height * rng.uniform(*shape.radius)
    aspect = rng.uniform(*shape.aspect)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)  # semi-axes before rotation
    theta = np.deg2rad(rng.uniform(-shape.rotation, shape.rotation))
    amps = rng.uniform(0, shape.wobble, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    reach = max(a, b) * (1 + amps.sum()) + 1
    y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
    mask = np.zeros((height, width), bool)
    if y0 >= y1 or x0 >= x1:
        return mask
    dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)  # (2, h, w) around the centre
    dy -= cy
    dx -= cx
    xr = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    yr = (dy * np.cos(theta) - dx * np.sin(theta)) / b
    norm = (np.abs(xr) ** shape.power + np.abs(yr) ** shape.power) ** (1 / shape.power)
    phi = np.arctan2(yr, xr)
    edge = 1 + sum(amp * np.cos(k * phi + ph) for amp, k, ph in zip(amps, (2, 3, 5), phases))
    mask[y0:y1, x0:x1] = norm <= edge
    return mask


def layout(scene: Scene, height: int, width: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """The regions of one image of ``scene`` in paint order: ``[(class id, (height, width) bool mask)]``."""
    cols = np.arange(width) / height
    edge = height * (
        rng.uniform(*FAR_BAND)
        + rng.uniform(0, FAR_WAVE) * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * cols + rng.uniform(0, 2 * np.pi))
    )
    far = np.arange(height)[:, None] < edge[None, :]  # (height, width)
    regions = [(class_id(scene.ground), ~far), (class_id(scene.far), far)]
    count = int(rng.integers(TWIN_OBJECTS[0], TWIN_OBJECTS[1] + 1))
    names = [scene.unique, *(scene.twins[k] for k in rng.choice(len(scene.twins), count))]
    centres = np.stack([rng.uniform(*OBJECT_ROWS, count + 1) * height, rng.uniform(0, 1, count + 1) * width], axis=1)
    for k in np.argsort(centres[:, 0], kind="stable"):  # back (top) to front (bottom)
        shape = APPEARANCES[CLASS_APPEARANCE[names[k]]].shape
        regions.append((class_id(names[k]), blob(shape, height, width, centres[k, 0], centres[k, 1], rng)))
    return regions


def render(regions: list[tuple[int, np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``regions`` (from ``layout``): ``(image (H, W, 3) uint8, labels (H, W) uint8)``.

    A region's pixels depend only on its class's appearance and on ``rng``:
    twins give identical images from identical draws.
    """
    height, width = regions[0][1].shape
    image = np.zeros((height, width, 3), np.float32)
    labels = np.zeros((height, width), np.uint8)
    for cls, mask in regions:
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        y0, x0 = ys.min(), xs.min()
        patch = texture(APPEARANCES[CLASS_APPEARANCE[CLASSES[cls]]].texture, ys.max() + 1 - y0, xs.max() + 1 - x0, rng)
        image[ys, xs] = patch[ys - y0, xs - x0]
        labels[ys, xs] = cls
    return lighting(image, rng), labels


def lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image gain, colour cast and brightness gradient, then per-pixel noise; to ``uint8``."""
    height, width = image.shape[:2]
    gain = rng.uniform(*GAIN) * rng.normal(1.0, CAST, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)  # (2, H, W)
    y, x = y / height - 0.5, x / width - 0.5
    ramp = rng.uniform(0, GRADIENT) * (x * np.cos(theta) + y * np.sin(theta))
    noise = rng.normal(0, NOISE, image.shape).astype(np.float32)
    out = image * gain + ramp[..., None] + noise
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)  # (H, W, 3)


def generate(seed: int, split: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``split`` at ``size = (height, width)``: ``(image (H, W, 3) uint8, labels (H, W) uint8)``."""
    rng = np.random.default_rng((seed, SPLITS.index(split), index))
    return render(layout(SCENES[scene_of(index)], *size, rng), rng)


def stem_of(split: str, index: int) -> str:
    """File stem of image ``index`` of ``split``."""
    return f"{split}_{index:05d}"


def write_one(task: tuple[str, int], out_dir: Path, seed: int, size: tuple[int, int]) -> None:
    """Generate image ``task = (split, index)`` and write its image and label PNGs."""
    split, index = task
    image, labels = generate(seed, split, index, size)
    stem = stem_of(split, index)
    Image.fromarray(image, "RGB").save(out_dir / split / "images" / f"{stem}.png", compress_level=1)
    Image.fromarray(labels, "L").save(out_dir / split / "labels" / f"{stem}.png", compress_level=1)


def prepare(params: Params, out_dir: Path) -> None:
    """Write the embedded dataset of ``params.data.embedded`` into ``out_dir`` (canonical layout).

    ``out_dir`` is normally a temporary folder that ``pipeline.datasets.prepare``
    renames into place; ``params.data.workers`` processes share the images.
    """
    cfg = params.data.embedded
    out_dir = Path(out_dir)
    make_layout(out_dir, CLASSES)
    counts = {"train": cfg.train_images, "val": cfg.val_images}
    tasks = [(split, index) for split in SPLITS for index in range(counts[split])]
    run_tasks(
        partial(write_one, out_dir=out_dir, seed=cfg.seed, size=hw(cfg.image_size)),
        tasks,
        params.data.workers,
        "embedded",
    )
    with open(out_dir / "scenes.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["stem", "split", "scene"])
        writer.writerows((stem_of(split, index), split, scene_of(index)) for split, index in tasks)


def local_only_ceiling(pixels: np.ndarray) -> dict[str, float]:
    """What context is worth: the best scores of a classifier that sees only local appearance.

    ``pixels[k]`` is the number of ground-truth pixels of class ``k``. Such a
    classifier cannot tell the members of a ``TWINS`` group apart. Its best
    pixel accuracy labels every pixel of a group as the group's largest member.
    For IoU, labelling a share ``q_i`` of the group's pixels as member ``i``,
    independently of the truth, gives ``IoU_i = q_i N_i / (q_i N + (1 - q_i) N_i)``
    (``N`` the group's pixels); with ``q_i = N_i / N`` that is
    ``IoU_i = q_i / (2 - q_i)``: 1/3 for two equal twins, 1/7 for four, the
    best for equal shares. Other classes count as perfect, and classes without
    pixels are left out of the mean. An oracle that knows the scene scores 1:
    the difference is the room that context can fill.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.shape != (len(CLASSES),) or pixels.sum() <= 0:
        raise ValueError(f"expected {len(CLASSES)} non-negative pixel counts with a positive sum, got {pixels}")
    iou = np.where(pixels > 0, 1.0, np.nan)
    correct = pixels.sum()
    for group in TWINS:
        ids = [class_id(name) for name in group]
        members = pixels[ids]
        if members.sum() == 0:
            continue
        correct -= members.sum() - members.max()
        share = members / members.sum()
        iou[ids] = np.where(members > 0, share / (2 - share), np.nan)
    return {"pixel_accuracy": float(correct / pixels.sum()), "miou": float(np.nanmean(iou))}


def twin_confusion(confusion: np.ndarray) -> float:
    """The context error of a model: the share of twin-class pixels it labels as one of their twins.

    ``confusion[i, j]`` counts the pixels of ground-truth class ``i`` predicted as
    ``j`` (``pipeline.scores.metrics``). 0 means context fully used; a context-blind
    classifier that guesses members in proportion to their shares ``q_i`` scores
    ``1 - sum q_i^2`` per group: 3/4 for four equal twins, 1/2 for two.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.shape != (len(CLASSES), len(CLASSES)):
        raise ValueError(f"expected a {len(CLASSES)}x{len(CLASSES)} confusion matrix, got shape {confusion.shape}")
    wrong = total = 0.0
    for group in TWINS:
        ids = [class_id(name) for name in group]
        block = confusion[np.ix_(ids, ids)]
        wrong += block.sum() - np.trace(block)
        total += confusion[ids].sum()
    return float(wrong / total) if total else 0.0
