"""Label maps for new images from a trained run: ``grar predict RUN_DIR INPUT... --out DIR``.

Needs only the run's ``checkpoint.pt`` (``pipeline.training.run.load_run``): no
dataset, statistics or pretrained file. Inference is the evaluation's own
(``pipeline.training.inference.infer``), batched the same way (images of one size
together, ``batches_by_size``), so predicting a run's val images and scoring
them with ``grar evaluate`` gives exactly the run's ``metrics.json``.

Outputs in ``--out`` (each written atomically):

- ``<stem>.png``: 8-bit mode ``P`` label map at the input's size, values = class
  ids, palette = ``pipeline.datasets.layout.palette`` (the report's colours);
- with ``overlay``: ``overlays/<stem>.png``, the image blended with the
  colours, and a legend of the classes present (largest first);
- ``.grar-predictions``: the marker saying grar wrote the folder, so a later
  run may replace its files. A non-empty folder without it is refused.

Every input is checked before any work (exists, is an image file whose header
reads, has at most ``MAX_IMAGE_PIXELS``, no two inputs with one stem); an image
that fails to decode later, or whose inference does not fit in memory, is
reported, the others are still written, and the command exits 1. A new photo
is predicted as a viewer displays it (its EXIF orientation applied), an image
of a prepared dataset as stored, like its label (``pipeline.datasets.layout``).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.config import hw
from pipeline.datasets.layout import check_pixels, colourise, displayed_size, palette
from pipeline.errors import DataError, escaped, one_line
from pipeline.io import atomic_path, check_new_output, has_marker
from pipeline.paths import DATASET_MARKER

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MARKER = ".grar-predictions"
OVERLAYS = "overlays"
OVERLAY_ALPHA = 0.5  # weight of the class colours in an overlay
RUN_WINDOW = 0  # ``PredictOptions.window``: the run's eval.window, else the larger side of its train.crop_size


@dataclass(frozen=True)
class PredictOptions:
    """How to predict: multi-scale + flip (the run's ``eval`` settings), sliding window, overlays, device."""

    multi_scale: bool = False
    window: int | None = None  # crop size; None = whole images; RUN_WINDOW = the run's eval.window or crop
    overlay: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class PredictResult:
    """What was written, and the images that could not be decoded (path, reason)."""

    written: tuple[Path, ...]
    failed: tuple[tuple[Path, str], ...]


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Image files of ``inputs`` (files, or folders: their JPEG/PNG files, not recursive), sorted by stem.

    A missing input, a folder with no image, a file that is not a JPEG or PNG,
    or two images with one stem (their outputs would collide) raise ``DataError``.
    """
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = []
            for p in sorted(path.iterdir()):
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir():
                    check_link(p)
                    found.append(p)
            if not found:
                raise DataError(f"{path}: no JPEG or PNG images in this folder")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{path}: not a JPEG or PNG file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(path)
        else:
            check_link(path)
            raise DataError(f"{path}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems and stems[path.stem].resolve() != path.resolve():
            raise DataError(f"{path}: same stem as {stems[path.stem]}: both would be written to {path.stem}.png")
        stems[path.stem] = path
    return sorted(stems.values(), key=lambda p: (p.stem, str(p)))


def out_of_memory(err: BaseException) -> bool:
    """Whether a torch error is a failed allocation (CPU: "can't allocate memory"; CUDA: ``OutOfMemoryError``)."""
    text = str(err)
    return type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


def check_link(path: Path) -> None:
    """``DataError`` when ``path`` is a symbolic link that leads nowhere: to itself (a loop), or to nothing."""
    if not path.is_symlink() or path.is_file():
        return
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python 3.11: "Symlink loop"
        raise DataError(f"{path}: a symbolic link that leads back to itself (a loop); remove it") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(f"{path}: a symbolic link that leads back to itself (a loop); remove it") from None
        raise DataError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist") from None
    raise DataError(f"{path}: a symbolic link to {target}, which is not a file")


def image_size(path: Path, displayed: bool = True) -> tuple[int, int]:
    """(H, W) from the image header, without decoding (as displayed: its EXIF orientation applied); ``DataError``
    naming the file when it is no image or has more than ``MAX_IMAGE_PIXELS``."""
    try:
        with Image.open(path) as image:
            check_pixels(image, path)
            width, height = displayed_size(image) if displayed else image.size
            return height, width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def prepared_image(path: Path) -> bool:
    """Whether ``path`` is an image of a prepared dataset (``<name>/<split>/images/`` beside ``.grar-dataset``):
    used as stored, like its label and the run's evaluation (``pipeline.datasets.layout``, Orientation)."""
    return path.parent.name == "images" and (path.parent.parent.parent / DATASET_MARKER).is_file()


def label_png(prediction: np.ndarray, colours: np.ndarray) -> Image.Image:
    """(H, W) class ids as an 8-bit mode P image whose palette holds ``colours`` (the rest black)."""
    image = Image.fromarray(prediction.astype(np.uint8, copy=False), mode="L").convert("P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(colours)] = colours
    image.putpalette(flat.reshape(-1).tolist())
    return image


def overlay_image(image: np.ndarray, prediction: np.ndarray, colours: np.ndarray, names: Sequence[str]) -> Image.Image:
    """The RGB image blended with its prediction's colours, and a legend of the classes present, largest first."""
    blend = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colourise(prediction, colours)  # (H, W, 3)
    blended = Image.fromarray(np.round(blend).astype(np.uint8), mode="RGB")
    ids, counts = np.unique(prediction, return_counts=True)
    present = [int(k) for k in ids[np.argsort(-counts, kind="stable")]]
    font = ImageFont.load_default()
    row, swatch, pad = 14, 10, 4
    text_width = max(int(font.getlength(names[k])) for k in present)
    legend_w, legend_h = pad * 3 + swatch + text_width, pad * 2 + row * len(present)
    canvas = Image.new("RGB", (blended.width + legend_w, max(blended.height, legend_h)), (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, k in enumerate(present):
        top = pad + n * row
        left = blended.width + pad
        draw.rectangle(
            (left, top + 1, left + swatch, top + 1 + swatch), fill=tuple(int(c) for c in colours[k]), outline=(0, 0, 0)
        )
        draw.text((left + swatch + pad, top), names[k], fill=(0, 0, 0), font=font)
    return canvas


def save_png(image: Image.Image, target: Path) -> None:
    """Write ``image`` as PNG at ``target`` atomically."""
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")


def predict_images(
    run_dir: Path, inputs: Sequence[Path], out: Path, options: PredictOptions, progress: bool = True
) -> PredictResult:
    """Predict every image of ``inputs`` with the run in ``run_dir`` into ``out`` (see the module docstring)."""
    import torch
    from tqdm import tqdm

    from pipeline.training.data import image_tensor, read_image
    from pipeline.training.distributed import MEMORY_FORMAT, resolve_device
    from pipeline.training.inference import batches_by_size, infer
    from pipeline.training.run import load_run

    images = collect_inputs(inputs)
    # an --out that is, holds or lies in an input (folder or image), or a folder of someone else's: refused
    check_new_output(out, [*inputs, *images], folder=True, ours=has_marker(MARKER), what="--out", writer="grar predict")
    displayed = [not prepared_image(path) for path in images]  # a new photo: as a viewer shows it
    sizes = [image_size(path, shown) for path, shown in zip(images, displayed)]
    run = load_run(run_dir)
    window = options.window
    if window == RUN_WINDOW:
        window = run.params.eval.window or max(hw(run.params.train.crop_size))
    config = run.params.eval.model_copy(update={"window": window})
    device = resolve_device(options.device)
    model = run.model.to(device, memory_format=MEMORY_FORMAT)
    colours = palette(len(run.class_names))
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(f"grar predict {escaped(str(run_dir))}\n", encoding="utf-8")
    if options.overlay:
        (out / OVERLAYS).mkdir(exist_ok=True)
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    bar = tqdm(total=len(images), unit="img", desc="predict", disable=not progress)
    with bar, torch.inference_mode():
        for batch in batches_by_size(sizes):
            decoded = []
            for index in batch:
                try:
                    decoded.append((index, read_image(images[index], displayed[index])))
                except DataError as err:
                    failed.append((images[index], str(err)))
                    tqdm.write(f"grar: error: {one_line(str(err))}", file=sys.stderr)  # above the bar, which goes on
                    bar.update()
            if not decoded:
                continue
            try:
                tensors = torch.stack([image_tensor(array) for _, array in decoded])  # (B, 3, H, W)
                tensors = tensors.to(device, memory_format=MEMORY_FORMAT)
                labels = infer(model, tensors, config, run.params.train.precision, options.multi_scale)  # (B, K, H, W)
                labels = labels.argmax(dim=1).cpu().numpy()  # (B, H, W)
            except RuntimeError as err:  # torch.OutOfMemoryError (CUDA) is one too
                if not out_of_memory(err):
                    raise
                for index, array in decoded:
                    reason = (
                        f"{images[index]}: {array.shape[1]}x{array.shape[0]} pixels do not fit in memory for "
                        f"inference ({str(err).splitlines()[0]}); predict it with --window, or scaled down"
                    )
                    failed.append((images[index], reason))
                    tqdm.write(f"grar: error: {one_line(reason)}", file=sys.stderr)
                    bar.update()
                continue
            for (index, array), prediction in zip(decoded, labels):
                stem = images[index].stem
                target = out / f"{stem}.png"
                save_png(label_png(prediction, colours), target)
                written.append(target)
                if options.overlay:
                    save_png(overlay_image(array, prediction, colours, run.class_names), out / OVERLAYS / f"{stem}.png")
                bar.update()
    return PredictResult(tuple(written), tuple(failed))
