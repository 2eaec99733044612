"""The one typed, validated configuration: a frozen tree mirroring ``params.yaml``.

``params.yaml`` is the single source of truth. ``load_params`` reads it, applies
command-line overrides (``--set train.crop_size=512``), and validates the result
against the tree below: an unknown key, a wrong type or an out-of-range value
raises ``ConfigError`` (exit code 2) whose message names the key path and the
allowed values. Every section is frozen: code receives a config it cannot
mutate, and a new value means a new config (``with_overrides``).

Sections mirror the stages of ``dvc.yaml``: ``data`` (download, prepare,
synthesize), ``stats``, ``model``, ``train``, ``eval``, ``bench``,
``executor``; ``profile`` and ``seed`` are shared.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from pipeline.errors import ConfigError
from pipeline.io import overlaps
from pipeline.safe_yaml import YAML_MAX_BYTES, parse_yaml, read_yaml

DEFAULT_PARAMS = Path("params.yaml")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
# A size in pixels: an int for a square, or [height, width].
Size = PositiveInt | tuple[PositiveInt, PositiveInt]

BackboneName = Literal["tiny_resnet", "resnet50", "resnet101", "resnest101"]
StemName = Literal["standard", "deep", "deep_v1c"]
# The published ImageNet weight files (``pipeline.weights.PUBLISHED``), by their publishers' model names: the
# keys of ``weights.files``. torchvision's resnet50 / resnet101 (7x7 stem), PyTorch-Encoding's resnet50s /
# resnet101s (deep stem 64-64-128), mmsegmentation's resnet50_v1c / resnet101_v1c (32-32-64), ResNeSt-101.
WeightsName = Literal["resnet50", "resnet101", "resnest101", "resnet50s", "resnet101s", "resnet50_v1c", "resnet101_v1c"]
# (model.backbone, model.stem) -> the key of weights.files that ``model.pretrained: imagenet`` loads. ResNeSt-101
# has its own deep stem whatever model.stem says (``ModelConfig``), so both accepted stems name its one file.
IMAGENET_FILES: dict[tuple[str, str], str] = {
    ("resnet50", "standard"): "resnet50",
    ("resnet101", "standard"): "resnet101",
    ("resnet50", "deep"): "resnet50s",
    ("resnet101", "deep"): "resnet101s",
    ("resnet50", "deep_v1c"): "resnet50_v1c",
    ("resnet101", "deep_v1c"): "resnet101_v1c",
    ("resnest101", "standard"): "resnest101",
    ("resnest101", "deep"): "resnest101",
}
IMAGENET = "imagenet"  # model.pretrained: the file of weights.files that IMAGENET_FILES names for backbone and stem
Precision = Literal["bf16", "fp32"]  # train.precision: the autocast of CUDA runs (pipeline.training.distributed.amp)
HeadName = Literal["fcn", "ppm", "aspp", "danet", "ocr", "grar"]
# The built-in datasets; a user's own folder datasets are named under ``data.folders``.
BUILTIN_DATASETS = ("embedded", "ade20k", "pascal_context", "coco_stuff")
# The built-in datasets that are downloaded: they may instead be read from a local copy (``data.local``).
DOWNLOADED_DATASETS = ("ade20k", "pascal_context", "coco_stuff")
# A dataset name: a built-in one or a key of ``data.folders`` (checked by ``Params``).
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
LabelValue = Annotated[int, Field(ge=0, le=255)]
Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    """Base of every config section: frozen, strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


ImageSide = Annotated[int, Field(ge=16, le=1024)]


class EmbeddedDataConfig(Section):
    """Size of the generated embedded dataset (no download)."""

    train_images: PositiveInt
    val_images: PositiveInt
    image_size: ImageSide | tuple[ImageSide, ImageSide]  # a square side, or [height, width]
    seed: NonNegativeInt


class FolderDatasetConfig(Section):
    """A dataset of the user's, read in place from ``path`` (layouts: ``pipeline.datasets.folder``).

    ``ignore``: the label value meaning "not labelled" (written as 255);
    ``remap``: label value -> class id, for label maps that use other ids
    (values not listed are class ids already).
    """

    path: str = Field(min_length=1)
    ignore: LabelValue = 255
    remap: dict[LabelValue, LabelValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ignore_not_remapped(self) -> FolderDatasetConfig:
        if self.ignore in self.remap:
            raise ValueError(f"remap: value {self.ignore} is the ignore value; it cannot also be remapped")
        return self


class DataConfig(Section):
    """Where datasets are downloaded and prepared, and which ones the pipeline builds."""

    root: str = Field(min_length=1)
    downloads: str = Field(min_length=1)
    mirror: str | None
    datasets: tuple[DatasetName, ...] = Field(min_length=1)
    workers: PositiveInt  # processes converting a real dataset (grar prepare)
    max_images: PositiveInt | None  # keep the first N images of each split (sorted by name); null = all
    embedded: EmbeddedDataConfig
    # The user's own datasets: name -> PATH (or {path, ignore, remap}).
    folders: dict[DatasetName, str | FolderDatasetConfig]
    # Downloaded datasets already extracted elsewhere (a cluster's shared copy): name -> the folder holding
    # the official layout (``pipeline.datasets.download.LOCAL_LAYOUTS``), read in place, never written to.
    local: dict[DatasetName, Annotated[str, Field(min_length=1)]]

    @property
    def names(self) -> tuple[str, ...]:
        """Every dataset this config knows: the built-in ones, then ``folders``."""
        return BUILTIN_DATASETS + tuple(self.folders)

    @property
    def names_text(self) -> str:
        """The known names for an error message."""
        own = (
            f"; your folders (data.folders): {', '.join(self.folders)}"
            if self.folders
            else "; add your own under data.folders"
        )
        return f"built-in: {', '.join(BUILTIN_DATASETS)}{own}"

    def folder(self, name: str) -> FolderDatasetConfig | None:
        """The folder dataset ``name`` (its PATH form expanded), or ``None`` for a built-in one."""
        spec = self.folders.get(name)
        if isinstance(spec, str):
            return FolderDatasetConfig(path=spec)
        return spec


class StatsConfig(Section):
    """Class co-occurrence statistics (section 3.2, Eq. 1)."""

    root: str = Field(min_length=1)
    normalisation: Literal["printed", "conditional", "row"]
    top_k: PositiveInt
    workers: PositiveInt


class GrarConfig(Section):
    """Switches of the GRAr module (Eq. 2-4) and the ablations of Tables 1-2 (see ``model.heads.grar``)."""

    positive: bool
    negative: bool
    edges: Literal["graph", "conv"]
    pooling: Literal["hard", "soft"]
    combine: Literal["sum", "concat"]


class ModelConfig(Section):
    """Backbone, head and their options."""

    backbone: BackboneName
    stem: StemName  # 7x7 | PyTorch-Encoding resnet50s 64-64-128 | mmseg V1c 32-32-64
    pretrained: str | None  # "imagenet" (weights.files[IMAGENET_FILES[backbone, stem]]) | a file of yours | null
    head: HeadName
    width: Annotated[int, Field(ge=16, multiple_of=16)]  # every head derives its widths from it (paper: 512)
    aux: bool
    danet: Literal["matched", "reference"]  # DANet head: Table 3's size, or as DANet's code builds it
    grar: GrarConfig

    @model_validator(mode="after")
    def _stem_fits_the_backbone(self) -> ModelConfig:
        if self.backbone == "resnest101" and self.stem == "deep_v1c":
            raise ValueError(
                "stem 'deep_v1c': resnest101 has its own deep stem (64-64-128, as 'deep'); use deep or standard "
                "(both build it)"
            )
        return self

    @property
    def imagenet_file(self) -> str | None:
        """The key of ``weights.files`` that ``pretrained: imagenet`` loads for this backbone and stem (``None``:
        nothing is published for them, e.g. ``tiny_resnet``)."""
        return IMAGENET_FILES.get((self.backbone, self.stem))


class LossConfig(Section):
    """Weights of the loss terms: aux CE, coarse-mask CE (GRAr), SR-Loss (Eq. 6), DANet's branch CEs."""

    aux: NonNegativeFloat
    coarse: NonNegativeFloat
    sr: NonNegativeFloat
    sr_class_weights: Literal["uniform", "frequency"]
    danet: NonNegativeFloat  # DANet (reference build): CE on the PAM-only and on the CAM-only logits, each
    resolution: Literal[
        "full", "feature"
    ]  # pixel CEs on logits upsampled to the labels (paper) | at 1/8, labels resized


class ScheduleConfig(Section):
    """Base learning rate, head multiplier and iterations of the poly schedule for one dataset (section 4.2).

    ``head_lr_mult``: the lr multiple of the heads on this dataset (docs/recipe.md says why per dataset);
    absent or null: ``train.head_lr_mult``.
    """

    lr: PositiveFloat
    iterations: PositiveInt
    head_lr_mult: PositiveFloat | None = None

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        """A schedule without its own multiplier dumps as written, ``{lr, iterations}`` (and hashes as before)."""
        dumped = handler(self)
        if dumped.get("head_lr_mult") is None:
            dumped.pop("head_lr_mult", None)
        return dumped


class AugmentConfig(Section):
    """Joint image/mask augmentation (section 4.1): flip, random scale, rotation, then crop.

    ``base_size`` null: each image is scaled by a factor uniform in ``scale`` (of its own size); a number: its
    long side is drawn uniformly from the integers of [base_size x scale[0], base_size x scale[1]], as
    PyTorch-Encoding's ``_sync_transform`` (encoding/datasets/base.py), the size evaluation uses
    (``eval.base_size``).
    """

    hflip: bool
    scale: tuple[PositiveFloat, PositiveFloat]
    rotate: Annotated[float, Field(ge=0, le=180)]  # degrees, uniform in [-rotate, rotate]
    base_size: PositiveInt | None = None  # long side = base_size x scale (PyTorch-Encoding); null = image size x scale

    @model_validator(mode="after")
    def _scale_is_a_range(self) -> AugmentConfig:
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"scale: [{self.scale[0]}, {self.scale[1]}] must be [low, high] with low <= high")
        return self


class TrainConfig(Section):
    """Optimisation (section 4.1): SGD with momentum, poly schedule, crops."""

    dataset: DatasetName
    schedules: dict[DatasetName, ScheduleConfig]
    crop_size: Size
    batch_size: PositiveInt
    augment: AugmentConfig
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegativeFloat
    poly_power: PositiveFloat
    head_lr_mult: PositiveFloat  # lr multiple of every parameter outside the backbone (PyTorch-Encoding: 10)
    loss: LossConfig
    checkpoint_every: PositiveInt
    device: Device
    workers: NonNegativeInt
    threads: PositiveInt | None  # CPU threads of a run (torch.set_num_threads), part of its identity; null: torch's
    precision: Precision = "bf16"  # CUDA runs, training and evaluation: bf16 autocast | fp32 (none); CPU: fp32 always

    @model_validator(mode="after")
    def _dataset_has_a_schedule(self) -> TrainConfig:  # names are checked against data.* by Params
        if self.dataset not in self.schedules:
            raise ValueError(
                f"train.dataset {self.dataset!r} has no entry in train.schedules ({', '.join(self.schedules)})"
            )
        return self

    @property
    def schedule(self) -> ScheduleConfig:
        """The schedule of ``train.dataset``."""
        return self.schedules[self.dataset]

    @property
    def head_mult(self) -> float:
        """The heads' lr multiple on ``train.dataset``: its schedule's ``head_lr_mult``, else ``head_lr_mult``."""
        own = self.schedule.head_lr_mult
        return self.head_lr_mult if own is None else own


class EvalConfig(Section):
    """Evaluation: always single scale (1.0, no flip); also multi-scale + flip, the "MS" column.

    ``fusion`` (``model.segmentor.FUSIONS``): ``softmax_mean`` averages the softmax of every (scale, flip) pass,
    the flip being of the whole scaled image (mmsegmentation's ``aug_test``); ``exp_sum`` sums over the scales
    the windows' exp(logits + logits of the flipped window), as PyTorch-Encoding's ``MultiEvalModule``.
    ``align_corners``: of every bilinear resize of evaluation (Encoding: true; mmsegmentation: false).
    """

    multi_scale: bool
    scales: tuple[PositiveFloat, ...] = Field(min_length=1)  # the MS scales
    flip: bool  # MS also averages horizontally flipped predictions
    base_size: PositiveInt | None  # long side = base_size x scale (PyTorch-Encoding); null = the image's size x scale
    window: PositiveInt | None  # sliding crop windows, stride 2/3 (PyTorch-Encoding); null = whole image
    fusion: Literal["softmax_mean", "exp_sum"] = "softmax_mean"
    align_corners: bool = False


class BenchConfig(Section):
    """The module benchmark of Table 3 (input 1 x C x H x W)."""

    out: str = Field(min_length=1)
    device: Literal["cpu", "cuda"]
    dtype: Literal["float32", "bfloat16"]  # bfloat16: the forward under bfloat16 autocast
    channels: PositiveInt
    height: PositiveInt
    width: PositiveInt
    head_width: Annotated[int, Field(ge=16, multiple_of=16)]
    num_classes: PositiveInt
    warmup: NonNegativeInt
    repeats: PositiveInt
    compile: bool


# Text that becomes an ``#SBATCH`` line: no line breaks or other control characters (they would add lines).
CONTROL_FREE = r"^[^\x00-\x1f\x7f]*$"
SbatchText = Annotated[str, Field(pattern=CONTROL_FREE)]
SbatchKey = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]


class SlurmConfig(Section):
    """Resources of one SLURM job (one grid cell), passed to submitit."""

    partition: SbatchText | None
    gpus_per_node: NonNegativeInt
    tasks_per_node: PositiveInt
    cpus_per_task: PositiveInt
    mem_gb: PositiveInt
    timeout_min: PositiveInt
    array_parallelism: PositiveInt
    additional: dict[SbatchKey, SbatchText | int]


class SlurmOverrides(Section):
    """Keys of ``executor.slurm`` replaced for one stage's job (``executor.stages.<stage>.slurm``); unset keys
    (and ``null``) keep ``executor.slurm``'s value."""

    partition: SbatchText | None = None
    gpus_per_node: NonNegativeInt | None = None
    tasks_per_node: PositiveInt | None = None
    cpus_per_task: PositiveInt | None = None
    mem_gb: PositiveInt | None = None
    timeout_min: PositiveInt | None = None
    additional: dict[SbatchKey, SbatchText | int] | None = None

    @model_serializer(mode="wrap")
    def _only_the_overrides(self, handler: Any) -> dict[str, Any]:
        """Dumped as written in params.yaml: the keys that override, not every key as ``null``."""
        return {key: value for key, value in handler(self).items() if value is not None}


class StagePlacement(Section):
    """Where one non-training stage runs: ``local`` (in the ``dvc repro`` process) or ``slurm`` (one job, waited
    for, with ``executor.slurm`` and this ``slurm``'s overrides; ``pipeline.cluster.stage_jobs``)."""

    kind: Literal["local", "slurm"]
    slurm: SlurmOverrides


class StagesPlacement(Section):
    """``executor.stages``: where prepare, stats and bench run (training always follows ``executor.kind``)."""

    prepare: StagePlacement
    stats: StagePlacement
    bench: StagePlacement


class ExecutorConfig(Section):
    """Where training runs: in-process (local), on SLURM via submitit, or submitit's debug; and where the
    other heavy stages run (``stages``)."""

    kind: Literal["local", "slurm", "debug"]
    parallel: PositiveInt = 1  # local: runs trained side by side, one process each (1 for configs built in code)
    log_dir: str = Field(min_length=1)
    slurm: SlurmConfig
    stages: StagesPlacement = Field(default_factory=lambda: StagesPlacement.model_validate(ALL_LOCAL))


# ``executor.stages`` of an executor built in code (tests, `grar cluster`): every stage in-process.
ALL_LOCAL = {stage: {"kind": "local", "slurm": {}} for stage in ("prepare", "stats", "bench")}


CellName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class GridCell(Section):
    """One cell of a grid: a name and overrides (``dotted.key: value``) on the base config, after the grid's."""

    name: CellName
    set: dict[str, Any]


class Grid(Section):
    """One grid: overrides shared by all its cells (``set``), then its cells.

    In params.yaml either ``{set: {...}, cells: [...]}`` or a plain list of cells
    (nothing shared). A cell's overrides are ``overrides()[cell]``: the shared
    ``set``, then the cell's own (a cell may override a shared key); every reader
    of grid cells goes through it.
    """

    set: dict[str, Any] = Field(default_factory=dict)
    cells: tuple[GridCell, ...]

    @model_validator(mode="before")
    @classmethod
    def _list_is_cells(cls, value: Any) -> Any:
        """A plain list of cells is a grid that shares nothing. (Past a before-validator pydantic validates
        Python objects, strictly: the YAML list of cells becomes the tuple the field expects.)"""
        if isinstance(value, (list, tuple)):
            return {"set": {}, "cells": tuple(value)}
        if isinstance(value, dict) and isinstance(value.get("cells"), list):
            return {**value, "cells": tuple(value["cells"])}
        return value

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> Any:
        """A grid that shares nothing dumps as the plain list of cells it can be written as (``grar config``)."""
        dumped = handler(self)
        return dumped["cells"] if not self.set else dumped

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Cell name -> its effective overrides (shared ``set`` ⊕ the cell's ``set``), in cell order.

        Applied in order with ``set_path``: a cell key that names a shared key (or a
        section holding it) replaces it; the rest of the shared ``set`` stays.
        """
        return {cell.name: {**self.set, **cell.set} for cell in self.cells}


class GridConfig(Section):
    """Grids (Tables 1-6): named grids of cells, each run once per seed."""

    runs: str = Field(min_length=1)  # run folders <runs>/<cell>-s<seed>-<hash10>/, grid indexes <runs>/grids/
    metrics: str = Field(min_length=1)  # the evaluate stage's <metrics>/<grid>/<cell>.json (dvc metrics)
    details: str = Field(min_length=1)  # the evaluate stage's per-seed scores <details>/<grid>.json (not metrics)
    plots: str = Field(min_length=1)  # the evaluate stage's training curves <plots>/<grid>/<cell>.csv (dvc plots)
    bootstrap: Annotated[int, Field(ge=100)]  # replicates of the paired bootstrap (pipeline.scores.bootstrap)
    seeds: tuple[NonNegativeInt, ...] = Field(min_length=1)
    grids: dict[CellName, Grid]

    def cells(self, grid: str) -> dict[str, dict[str, Any]]:
        """Cell name -> effective overrides (shared ``set`` ⊕ the cell's, ``Grid.overrides``) of grid ``grid``;
        ``ConfigError`` listing the grids when there is none of that name."""
        if grid not in self.grids:
            raise ConfigError(f"grid {grid!r} not in grid.grids; grids: {', '.join(self.grids) or '(none)'}")
        return self.grids[grid].overrides()


class WeightsConfig(Section):
    """The backbones' ImageNet weight files (``pipeline.weights``): declared once, fetched by the weights stage.

    ``files``: published file (``WeightsName``) -> its path, inside ``root``
    (the weights stage's output); ``model.pretrained: imagenet`` loads the one
    ``IMAGENET_FILES`` names for the run's backbone and stem. ``mirror``: a
    base URL or local folder replacing the official hosts (the file name is kept).
    """

    root: str = Field(min_length=1)
    mirror: str | None
    files: dict[WeightsName, Annotated[str, Field(min_length=1)]]


class Params(Section):
    """The whole of ``params.yaml``."""

    profile: str = Field(min_length=1)
    seed: NonNegativeInt
    data: DataConfig
    stats: StatsConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    bench: BenchConfig
    executor: ExecutorConfig
    grid: GridConfig
    weights: WeightsConfig

    @model_validator(mode="after")
    def _dataset_names_known(self) -> Params:
        """Every dataset named in ``data``/``train`` is built-in or a folder of ``data.folders``."""
        data, known = self.data, self.data.names
        for name in data.folders:
            if name in BUILTIN_DATASETS:
                raise ValueError(f"data.folders.{name}: {name!r} is a built-in dataset; give your folder another name")
            source = data.folder(name).path
            for other in known:
                if overlaps(source, Path(data.root) / other):
                    raise ValueError(
                        f"data.folders.{name}: {source} overlaps {Path(data.root) / other}, where grar writes the "
                        f"prepared {other!r} dataset, replacing what is there; put your folder elsewhere"
                    )
        for name, path in data.local.items():
            if name not in DOWNLOADED_DATASETS:
                raise ValueError(
                    f"data.local.{name}: only a downloaded dataset can be read from a local copy; "
                    f"allowed: {', '.join(DOWNLOADED_DATASETS)} (a dataset of your own goes under data.folders)"
                )
            for taken, what in (
                (Path(data.root) / name, f"the prepared {name!r} dataset"),
                (Path(data.downloads), "downloads"),
            ):
                if overlaps(path, taken):
                    raise ValueError(
                        f"data.local.{name}: {path} overlaps {taken}, where grar writes {what}; "
                        f"point it at the folder holding the extracted dataset"
                    )
        for name in data.datasets:
            if name not in known:
                raise ValueError(f"data.datasets: unknown dataset {name!r}; {data.names_text}")
        if len(set(data.datasets)) != len(data.datasets):
            raise ValueError(f"data.datasets: a dataset is listed twice ({', '.join(data.datasets)})")
        if self.train.dataset not in known:
            raise ValueError(f"train.dataset: unknown dataset {self.train.dataset!r}; {self.data.names_text}")
        for name in self.train.schedules:
            if name not in known:
                raise ValueError(f"train.schedules.{name}: unknown dataset {name!r}; {self.data.names_text}")
        return self

    @model_validator(mode="after")
    def _weights_fit(self) -> Params:
        """``weights.files`` lie in ``weights.root``; ``pretrained: imagenet`` has a file for the backbone and stem."""
        root = Path(os.path.abspath(self.weights.root))
        for name, path in self.weights.files.items():
            if root not in Path(os.path.abspath(path)).parents:
                raise ValueError(
                    f"weights.files.{name}: {path} must lie inside weights.root ({self.weights.root}), where the "
                    f"weights stage writes; for a file kept elsewhere set model.pretrained to its path"
                )
        if self.model.pretrained == IMAGENET:
            imagenet_key(self.model, self.weights)
        return self


# Keys added after runs were trained with grar: each defaults to the value that does what grar did before it
# existed (so an older params file or checkpoint still validates, meaning what it meant), and at that value it is
# left out of the run identity (``pipeline.rundir.config_hash``), so those runs keep their folders.
ADDED_KEYS = (
    ("train", "augment", "base_size"),
    ("train", "precision"),
    ("eval", "fusion"),
    ("eval", "align_corners"),
)


def default_of(path: tuple[str, ...]) -> Any:
    """The schema's default of the key at ``path`` (e.g. ``("train", "precision")``)."""
    model: Any = Params
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].get_default()


def imagenet_key(model: ModelConfig, weights: WeightsConfig | None) -> str:
    """The key of ``weights.files`` that ``model.pretrained: imagenet`` loads; ``ValueError`` naming what is missing."""
    key = model.imagenet_file
    if key is None:
        published = ", ".join(sorted({backbone for backbone, _ in IMAGENET_FILES}))
        raise ValueError(
            f"model.pretrained: imagenet: no ImageNet file is published for backbone {model.backbone!r} with stem "
            f"{model.stem!r} (published for: {published}); set model.pretrained: null or a file's path"
        )
    files = {} if weights is None else weights.files
    if key not in files:
        raise ValueError(
            f"model.pretrained: imagenet: weights.files has no {key!r} file for backbone {model.backbone!r} with stem "
            f"{model.stem!r} (it has: {', '.join(files) or 'none'}); add weights.files.{key}, or set "
            f"model.pretrained: null or a file's path"
        )
    return key


def hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """A ``Size`` as (height, width)."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def load_params(path: str | os.PathLike = DEFAULT_PARAMS, overrides: tuple[str, ...] = ()) -> Params:
    """Read, override and validate ``path``; raise ``ConfigError`` naming the bad key."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source=f"{path} with --set overrides" if overrides else str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.crop_size=512")
    if len(value) > YAML_MAX_BYTES:
        raise ConfigError(f"--set {key}: value of {len(value):,} characters; at most {YAML_MAX_BYTES:,}")
    try:
        parsed = parse_yaml(value, f"--set {key}")
    except ConfigError as err:
        if "not valid YAML" not in str(err):
            raise
        raise ConfigError(f"--set {key}: value {value!r} is not valid YAML") from None
    set_path(raw, key.strip(), parsed)


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` (a copy) for ``key = "a.b.c"``; every parent must be a section."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}: {prefix} is not a section; {allowed_keys_text(raw, parts[:depth])}")
        node = child
    node[parts[-1]] = copy.deepcopy(value)  # a later key inside it (a cell's, after a grid's) must not edit the source


def allowed_keys_text(raw: dict[str, Any], parents: list[str]) -> str:
    """Describe the keys valid under ``parents`` in the schema."""
    model: type[BaseModel] = Params
    parts = iter(parents)
    for part in parts:
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        if get_origin(annotation) is dict and _is_section(get_args(annotation)[1]):
            if next(parts, None) is None:  # the mapping itself (train.schedules): its keys are names
                break
            annotation = get_args(annotation)[1]  # one of its values (train.schedules.ade20k): a section
        if not _is_section(annotation):
            break
        model = annotation
    return "allowed keys: " + ", ".join(model.model_fields)


def validate(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a raw mapping into ``Params``, grid cells included; the first error becomes one ``ConfigError``.

    Each grid's shared ``set`` is checked on the base config first (an error names
    ``grid.grids.NAME set``), then every cell with its effective overrides
    (``Grid.overrides``; an error names ``grid.grids.NAME cell 'CELL'``).
    """
    params = _validate_tree(raw, source)
    for grid, spec in params.grid.grids.items():
        names = [cell.name for cell in spec.cells]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{source}: grid.grids.{grid}: cell name {name!r} is used twice")
        if spec.set:
            _validate_overrides(raw, spec.set, f"{source}: grid.grids.{grid} set")
        for name, overrides in spec.overrides().items():
            _validate_overrides(raw, overrides, f"{source}: grid.grids.{grid} cell {name!r}")
    return params


def _validate_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Validate ``raw`` with ``overrides`` applied; a ``ConfigError`` names ``where``."""
    changed = copy.deepcopy(raw)
    try:
        for key, value in overrides.items():
            set_path(changed, key, value)
        _validate_tree(changed, where)
    except ConfigError as err:
        raise ConfigError(str(err).replace("--set ", f"{where}: ")) from None


def _validate_tree(raw: dict[str, Any], source: str) -> Params:
    try:
        # JSON-mode validation: strict types, yet YAML lists fill tuple fields.
        return Params.model_validate_json(json.dumps(raw, default=str))
    except ValidationError as err:
        raise ConfigError(describe_error(as_written(first_error(err.errors()), raw), source)) from None


def as_written(error: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """``error`` located as ``raw`` spells it: in a grid written as a plain list of cells, the cell at
    ``grid.grids.NAME.1`` (``Grid`` validates it as ``grid.grids.NAME.cells.1``)."""
    loc = tuple(error["loc"])
    if len(loc) > 3 and loc[:2] == ("grid", "grids") and loc[3] == "cells":
        grids = raw.get("grid", {}).get("grids") if isinstance(raw.get("grid"), dict) else None
        if isinstance(grids, dict) and isinstance(grids.get(loc[2]), list):
            return {**error, "loc": loc[:3] + loc[4:]}
    return error


def first_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The error to report: the first, or for a union of a scalar and a list the member matching the input's kind.

    ``int | [int, int]`` given a list fails both members; the list member's error
    (``must be > 0``, ``too_long``) says what is wrong, the scalar's does not.
    """
    first = errors[0]
    scalar_tags = ("str", "int", "float", "bool", "none", "constrained-int")
    if isinstance(first.get("input"), dict) and first["loc"] and first["loc"][-1] in scalar_tags:
        # ``str | Section`` given a mapping: the section member's error says what is wrong.
        for error in errors:
            if error["loc"][: len(first["loc"]) - 1] == first["loc"][:-1] and error["loc"] != first["loc"]:
                return error
    if isinstance(first.get("input"), list):
        for error in errors:
            if error["loc"][: len(first["loc"]) - 1] == first["loc"][:-1] and any(
                str(part).startswith("tuple[") for part in error["loc"][len(first["loc"]) - 1 :]
            ):
                return error
    return first


def describe_error(error: dict[str, Any], source: str) -> str:
    """One line naming the key path, what is wrong and what is allowed."""
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    got = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        path = ".".join(loc)
        return f"{source}: unknown key {path}; {allowed_keys_text({}, loc[:-1])}"
    path = ".".join(_strip_union_tags(loc))
    if kind == "missing" and loc[-1].isdigit():
        parent = ".".join(_strip_union_tags(loc[:-1]))
        return f"{source}: {parent}: item {loc[-1]} is missing; expected {_expected_type(loc[:-1])}"
    if kind == "missing":
        return f"{source}: missing key {path}"
    if kind == "literal_error":
        allowed = ctx.get("expected", "")
        return f"{source}: {path}: unknown value {got!r}; allowed: {allowed}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{source}: {path}: must be {sign} {bound} (got {got!r})"
    if kind == "value_error":
        return f"{source}: {path + ': ' if path else ''}{ctx.get('error', error['msg'])}"
    if kind == "too_short":
        return f"{source}: {path}: must hold at least {ctx.get('min_length')} item(s) (got {got!r})"
    if kind == "too_long":
        return f"{source}: {path}: must hold at most {ctx.get('max_length')} item(s) (got {got!r})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == CONTROL_FREE:
        return f"{source}: {path}: must not hold line breaks or other control characters (got {got!r})"
    expected = _expected_type(loc)
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{source}: {path}: {message} (got {got!r}){'; expected ' + expected if expected else ''}"


def _strip_union_tags(loc: list[str]) -> list[str]:
    """Drop pydantic's union-member tags (``str``, ``int``...) from an error location."""
    tags = {"str", "int", "constrained-int", "constrained-str", "float", "bool", "none", "[key]"}
    return [part for part in loc if part not in tags and not part.startswith(("literal[", "tuple[", "function-after["))]


def _expected_type(loc: list[str]) -> str:
    """The annotation at ``loc`` in the schema, as text, or '' when not found."""
    model: Any = Params
    annotation: Any = None
    for part in _strip_union_tags(loc):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""  # inside a mapping or list: its items' type is not what the annotation says
        field = model.model_fields.get(part)
        if field is None:
            return ""
        annotation = field.annotation
        model = annotation
    return "" if annotation is None else _type_text(annotation)


def _type_text(annotation: Any) -> str:
    """An annotation as a params.yaml user reads it: ``int | [int, int]``, ``str | null``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_text(arg) for arg in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return "[" + ", ".join(_type_text(arg) for arg in args) + "]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A new, validated config with ``{"train.crop_size": 512, ...}`` applied."""
    raw = params.model_dump(mode="python")
    for key, value in overrides.items():
        set_path(raw, key, value)
    return validate(raw, source="override")
