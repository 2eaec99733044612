"""What a grid will cost, before or while it runs (``grar grid plan NAME``, and the report's grid pages).

Without torch (like ``grar grid status``). For each run (cell, seed) of the grid:
its state, iterations done of the schedule's total, the measured seconds per
iteration, the run time still to go, its GPU-hours, and whether it can finish
within ``executor.slurm.timeout_min`` without a requeue.

**Seconds per iteration** are measured, never guessed: the median of the
``seconds`` column (wall time per iteration, data loading included) of every
``train_log.csv`` under ``grid.runs`` (finished and running runs, any grid)
whose ``config.yaml`` has the same backbone (``model.backbone``), crop
(``train.crop_size``), device (``train.device`` as configured) and precision
(``train.precision``; a config written before that key: ``bf16``, what grar
then did). Without such
a log the rate, and everything computed from it, is "unknown": train one run
first (or let the grid start) and plan again.

**Remaining time** of a run = (total − logged iterations) × rate, 0 when done.
**GPU-hours** = remaining hours × ``executor.slurm.gpus_per_node`` × nodes
(grar submits one node per job). **Wall time**: the runs still to go scheduled
in grid order onto ``executor.slurm.array_parallelism`` slots (SLURM starts
array tasks in index order as slots free), ``executor.parallel`` slots with
``executor.kind`` local, one with debug; runs already running take their slot first. A run whose
remaining time exceeds ``executor.slurm.timeout_min`` cannot finish in one job:
SLURM's time limit will stop it, and it resumes only through requeues (warned).
A run whose config another grid also holds (Table 4's cells are Table 1's runs)
is trained once but counted in each grid's plan: the summary names those.
"""

from __future__ import annotations

import csv
import heapq
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.paths import runs_dir
from pipeline.rundir import CONFIG_FILE, LOG_FILE, finished_metrics, read_log
from pipeline.safe_yaml import YAML_MAX_DEPTH, parse_generated_yaml

NODES = 1  # grar's SLURM jobs use one node (pipeline.cluster.executors)
RateKey = tuple[str, tuple[int, int], str, str]  # backbone, crop (H, W), train.device, train.precision


@dataclass(frozen=True)
class RunCost:
    """The expected cost of one run of a grid (see the module docstring)."""

    cell: str
    seed: int
    state: str
    iterations: int  # of the schedule
    done: int  # iterations logged so far
    seconds_per_iteration: float | None  # None: no measured run of the same backbone, crop, device and precision
    remaining_s: float | None
    gpu_hours: float | None
    over_limit: bool  # remaining time > executor.slurm.timeout_min: needs requeues


@dataclass(frozen=True)
class Plan:
    """Every run's cost and the grid's totals."""

    grid: str
    runs: tuple[RunCost, ...]
    slots: int  # runs at a time
    gpus_per_job: int
    timeout_min: int
    executor: str
    sources: dict[RateKey, int]  # rate key -> logs measured
    shared: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)  # (cell, seed) -> other grids' cells

    @property
    def remaining_s(self) -> float | None:
        values = [run.remaining_s for run in self.runs]
        return None if None in values else float(sum(values))

    @property
    def gpu_hours(self) -> float | None:
        values = [run.gpu_hours for run in self.runs]
        return None if None in values else float(sum(values))

    @property
    def wall_s(self) -> float | None:
        """The makespan of the remaining runs on ``slots`` parallel slots, in grid order (running ones first)."""
        todo = [run for run in self.runs if run.state != "done"]
        if any(run.remaining_s is None for run in todo):
            return None
        ordered = [run for run in todo if run.state == "running"] + [run for run in todo if run.state != "running"]
        slots = [0.0] * self.slots
        for run in ordered:
            heapq.heappush(slots, heapq.heappop(slots) + run.remaining_s)
        return max(slots)

    @property
    def warnings(self) -> list[str]:
        return [
            f"{self.grid}/{run.cell} seed {run.seed}: needs {duration(run.remaining_s)} more, over "
            f"executor.slurm.timeout_min {self.timeout_min} min: it cannot finish without requeues (raise "
            "the time limit, or make sure the partition requeues preempted jobs)"
            for run in self.runs
            if run.over_limit
        ]


def crop_of(value: Any) -> tuple[int, int]:
    """``train.crop_size`` (an int or [H, W]) as (H, W)."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def rate_key(raw: dict[str, Any]) -> RateKey:
    """The rate key of resolved params as a plain mapping (``Params.model_dump`` or a run's ``config.yaml``)."""
    train = raw["train"]
    precision = str(train.get("precision", "bf16"))  # runs from before train.precision: bf16 (on CUDA), as grar did
    return str(raw["model"]["backbone"]), crop_of(train["crop_size"]), str(train["device"]), precision


def measured_seconds(root: Path) -> dict[RateKey, list[list[float]]]:
    """Per rate key, the ``seconds`` column of every readable run folder's log under ``root`` (one list per log).

    Thousands of run folders: each ``config.yaml`` is read only as far as its rate key (``config_rate_key``),
    each log only for its ``seconds`` column (``logged_seconds``).
    """
    found: dict[RateKey, list[list[float]]] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name) if root.is_dir() else []
    except OSError:
        entries = []
    for entry in entries:
        if not entry.is_dir():
            continue
        folder = Path(entry.path)
        key = config_rate_key(folder / CONFIG_FILE)
        seconds = logged_seconds(folder / LOG_FILE) if key is not None else []
        if seconds:
            found.setdefault(key, []).append(seconds)
    return found


RATE_PATHS = {
    ("model", "backbone"): "backbone",
    ("train", "crop_size"): "crop",
    ("train", "device"): "device",
    ("train", "precision"): "precision",  # absent from runs of before train.precision: bf16, as rate_key reads it
}
REQUIRED = ("backbone", "crop", "device")


def config_rate_key(path: Path) -> RateKey | None:
    """The rate key of a run's ``config.yaml`` from the YAML events up to the last of its values (libyaml;
    nothing else is built, aliases and anything unusual left to the full, bounded parser); ``None`` for a
    folder that is no run folder of this version (it measures nothing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        values = dumped_rate_values(text) or rate_values(text)
        if values is None:  # aliases, or an odd shape: the bounded parser, then the plain lookup
            return rate_key(parse_generated_yaml(text, str(path)))
        return values["backbone"], crop_of(values["crop"]), values["device"], values.get("precision", "bf16")
    except (ConfigError, yaml.YAMLError, KeyError, TypeError, ValueError, IndexError):
        return None


DUMPED_SECTION = re.compile(r"^([a-z_]+):$")
DUMPED_KEY = re.compile(r"^  (backbone|crop_size|device|precision):(?: ([A-Za-z0-9_.-]+))?$")
DUMPED_ITEM = re.compile(r"^  - ([0-9]+)$")


def dumped_rate_values(text: str) -> dict[str, Any] | None:
    """The rate values of a ``config.yaml`` exactly as grar dumps it (``yaml.safe_dump`` of the params, block
    style: ``model:`` / ``  backbone: resnet101``, ``train:`` / ``  crop_size:`` / ``  - 32`` / ``  - 192``),
    read line by line in microseconds; ``None`` at the first line of another shape (then ``rate_values``)."""
    found: dict[str, Any] = {}
    section, key = None, None
    for line in text.splitlines():
        if key == "crop_size" and (item := DUMPED_ITEM.match(line)):
            found.setdefault("crop", []).append(int(item.group(1)))
            continue
        key = None
        if (header := DUMPED_SECTION.match(line)) is not None:
            if section == "train" and all(name in found for name in REQUIRED):  # the train section is read
                break
            section = header.group(1)
        elif section in ("model", "train") and (match := DUMPED_KEY.match(line)):
            name = RATE_PATHS.get((section, match.group(1)))
            if name is None:
                continue
            if match.group(2) is None:
                if name != "crop" or name in found:
                    return None
                key = "crop_size"
                found["crop"] = []
            else:
                found[name] = int(match.group(2)) if name == "crop" else match.group(2)
    crop = found.get("crop")
    if not all(name in found for name in REQUIRED) or (isinstance(crop, list) and len(crop) != 2):
        return None
    return found


def rate_values(text: str) -> dict[str, Any] | None:
    """``backbone``, ``crop`` (an int or [h, w]), ``device`` and, when there, ``precision`` read from the YAML
    events of a config; ``None`` when one of the first three is missing or one is not plain (an alias, a tag,
    a nested collection): then the caller parses it all."""
    loader = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    found: dict[str, Any] = {}
    frames: list[list[Any]] = []  # [is a mapping, path, current key (mappings), expecting a key]
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionEndEvent):
            frames.pop()
            if frames and frames[-1][0]:
                frames[-1][3] = True
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if frames and frames[-1][0] and frames[-1][3]:  # a mapping's key
            if not isinstance(event, yaml.ScalarEvent):
                return None
            frames[-1][2], frames[-1][3] = event.value, False
            continue
        path = (*frames[-1][1], frames[-1][2]) if frames and frames[-1][0] else (*frames[-1][1], "-") if frames else ()
        name = RATE_PATHS.get(path)
        if name is None and path[:2] == ("train", "crop_size") and isinstance(event, yaml.ScalarEvent):
            found.setdefault("crop", []).append(int(event.value))
        elif name is not None:
            if isinstance(event, yaml.AliasEvent) or event.tag not in (None, "!"):
                return None
            if isinstance(event, yaml.ScalarEvent):
                found[name] = int(event.value) if name == "crop" else event.value
            elif not (name == "crop" and isinstance(event, yaml.SequenceStartEvent)):
                return None
        if isinstance(event, yaml.CollectionStartEvent):
            if len(frames) >= YAML_MAX_DEPTH:
                return None
            frames.append([isinstance(event, yaml.MappingStartEvent), path, None, True])
        elif frames and frames[-1][0]:
            frames[-1][3] = True
        if len(found) == len(RATE_PATHS) and not (path[:2] == ("train", "crop_size") and len(frames) > 2):
            break
    return found if all(name in found for name in REQUIRED) else None


def logged_seconds(path: Path) -> list[float]:
    """The ``seconds`` column of a ``train_log.csv`` (empty cells skipped); ``[]`` without a readable log."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            column = next(rows).index("seconds")
            return [float(row[column]) for row in rows if len(row) > column and row[column]]
    except (OSError, UnicodeDecodeError, StopIteration, ValueError, IndexError, csv.Error):
        return []


def last_iteration(rows: list[dict[str, str]]) -> int:
    """The last iteration of ``train_log.csv`` rows (``read_log``); 0 for none."""
    return max((int(row["iteration"]) for row in rows if row.get("iteration")), default=0)


def logged_iterations(run_dir: Path) -> int:
    """The last iteration of a run's ``train_log.csv``; 0 without one."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return 0
    try:
        return last_iteration(read_log(path))
    except (OSError, ValueError):
        return 0


RECENT_ITERATIONS = 50  # the last so many logged iterations estimate a running run's time left


def progress_text(run_dir: Path, total: int, suspended: bool = False) -> str:
    """A running run's progress from its ``train_log.csv``: ``1200/50000 it, ETA 3 h 10 min``.

    The ETA is the median ``seconds`` of the last ``RECENT_ITERATIONS`` logged
    iterations x the iterations left; the evaluation after training is not
    counted. ``0/<total> it`` before the first logged iteration. A ``suspended``
    run has no ETA (``1200/50000 it, suspended``): it makes no progress.
    """
    path = run_dir / LOG_FILE
    try:
        rows = read_log(path) if path.is_file() else []
        done = last_iteration(rows)
        seconds = [float(row["seconds"]) for row in rows[-RECENT_ITERATIONS:] if row.get("seconds")]
    except (OSError, ValueError, KeyError):
        return "log unreadable"
    if suspended:
        return f"{done}/{total} it, suspended"
    if not seconds:
        return f"{done}/{total} it"
    return f"{done}/{total} it, ETA {eta_text(statistics.median(seconds) * max(total - done, 0))}"


def eta_text(seconds: float) -> str:
    """A time left for people: ``3 h 10 min``, ``12 min``, ``< 1 min`` (rounded to the minute)."""
    minutes = round(seconds / 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min" if minutes >= 1 else "< 1 min"


def offline_state(run_dir: Path, digest: str) -> str:
    """A run's state from its folder alone: ``done`` (metrics.json), ``started`` (a log), else ``pending``."""
    if finished_metrics(run_dir, digest) is not None:
        return "done"
    return "started" if (run_dir / LOG_FILE).is_file() else "pending"


def grid_plan(params: Params, grid: str, states: dict[tuple[str, int], str] | None = None) -> Plan:
    """The cost of every run of ``grid``; ``states`` ((cell, seed) -> state, e.g. from ``grid.status``),
    else each run's ``offline_state``."""
    from pipeline.cluster.grids import expand

    claimed: dict[str, Path] = {}
    others: dict[str, list[str]] = {}  # config hash -> "grid/cell" of the other grids' runs of that config
    for name in params.grid.grids:
        if name != grid:
            for run in expand(params, name, claimed):
                others.setdefault(run.config_hash, []).append(f"{name}/{run.cell}")
    slurm = params.executor.slurm
    seconds = measured_seconds(runs_dir(params))
    rates = {key: statistics.median(value for log in logs for value in log) for key, logs in seconds.items()}
    costs, shared = [], {}
    for run in expand(params, grid, claimed):
        if run.config_hash in others:
            shared[run.cell, run.seed] = tuple(others[run.config_hash])
        state = (states or {}).get((run.cell, run.seed)) or offline_state(run.run_dir, run.config_hash)
        total = run.params.train.schedule.iterations
        done = total if state == "done" else min(total, logged_iterations(run.run_dir))
        rate = rates.get(rate_key(run.params.model_dump(mode="json")))
        remaining = None if rate is None else (total - done) * rate
        costs.append(
            RunCost(
                run.cell,
                run.seed,
                state,
                total,
                done,
                rate,
                remaining,
                None if remaining is None else remaining / 3600 * slurm.gpus_per_node * NODES,
                remaining is not None and remaining > slurm.timeout_min * 60,
            )
        )
    slots = {"slurm": slurm.array_parallelism, "local": params.executor.parallel}.get(params.executor.kind, 1)
    return Plan(
        grid,
        tuple(costs),
        slots,
        slurm.gpus_per_node * NODES,
        slurm.timeout_min,
        params.executor.kind,
        {key: len(logs) for key, logs in seconds.items()},
        shared,
    )


def duration(seconds: float | None) -> str:
    """``1:02:03`` (hours:minutes:seconds, rounded to the second); ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def plan_rows(plan: Plan) -> list[tuple[str, ...]]:
    """The table of ``plan``: a header, then one row per run (cell, seed, state, iterations, s/it, remaining,
    GPU-hours, within the time limit)."""
    rows = [("cell", "seed", "state", "iterations", "s/it", "remaining", "GPU-h", "time limit")]
    for run in plan.runs:
        rows.append(
            (
                run.cell,
                str(run.seed),
                run.state,
                f"{run.done}/{run.iterations}",
                "unknown" if run.seconds_per_iteration is None else f"{run.seconds_per_iteration:.3f}",
                duration(run.remaining_s),
                "unknown" if run.gpu_hours is None else f"{run.gpu_hours:.2f}",
                "over: requeues" if run.over_limit else ("unknown" if run.remaining_s is None else "fits"),
            )
        )
    return rows


def plan_summary(plan: Plan) -> list[str]:
    """The totals and where the rates come from, in a few lines."""
    counts: dict[str, int] = {}
    for run in plan.runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    unknown = sum(run.remaining_s is None for run in plan.runs)
    gpu = "unknown" if plan.gpu_hours is None else f"{plan.gpu_hours:.2f}"
    lines = [
        f"grid {plan.grid}: {len(plan.runs)} runs ({', '.join(f'{n} {state}' for state, n in counts.items())}); "
        f"executor {plan.executor}: {plan.slots} run(s) at a time, {plan.gpus_per_job} GPU(s) per job, "
        f"time limit {plan.timeout_min} min",
        f"to go: {duration(plan.remaining_s)} of run time, {gpu} GPU-hours, wall time {duration(plan.wall_s)} "
        f"at {plan.slots} in parallel" + (f" ({unknown} run(s) without a measured rate)" if unknown else ""),
        "s/it: median of train_log.csv 'seconds' of the runs under grid.runs with the same backbone, crop, "
        "train.device and train.precision: "
        + (
            "; ".join(
                f"{backbone} {crop[0]}x{crop[1]} {device} {precision}: {n} log(s)"
                for (backbone, crop, device, precision), n in plan.sources.items()
            )
            or "none yet"
        ),
    ]
    if plan.shared:
        lines.append(
            f"{len(plan.shared)} of these runs are also runs of other grids (the same config, trained "
            "once; counted in each grid's plan): "
            + "; ".join(f"{cell} seed {seed} = {', '.join(others)}" for (cell, seed), others in plan.shared.items())
        )
    return lines + [f"warning: {warning}" for warning in plan.warnings]


def plan_text(plan: Plan) -> str:
    """``grar grid plan``'s output: the summary, the table, the warnings."""
    rows = plan_rows(plan)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    table = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    summary = plan_summary(plan)
    return "\n".join(summary[:3] + table + summary[3:])
