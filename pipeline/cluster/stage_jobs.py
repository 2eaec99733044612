"""A DVC stage's work, run in-process or as ONE SLURM job that is waited for and collected (``executor.stages``).

``run_stage(params, "bench", bench, outputs=[...], keys=[...])`` runs ``bench(params)``:

* ``executor.stages.<stage>.kind: local``: here, in the ``dvc repro`` process;
* ``slurm``: as one submitit job (submitted like a grid's arrays through
  ``pipeline.cluster.executors.make_executor``, with ``executor.slurm``'s
  resources and the keys ``executor.stages.<stage>.slurm`` replaces), waited for
  with the grid's bounded polls (``pipeline.cluster.grids``: squeue or sacct, ``Patience``
  for jobs SLURM forgets). The job writes the stage's outputs itself, so they
  must be on a file system that the login and compute nodes share; afterwards
  every path of ``outputs`` must exist, else the stage fails naming the log.

The job is recorded in ``<executor.log_dir>/stages/<stage>[-<item>].json``
(written atomically; submitit's files and logs in the folder of the same name):
the digest of the params keys the stage reads (``keys``, as dvc.yaml lists them)
and the job's name (a fresh token) before ``sbatch``, its job id and log after.
A later run of the stage with the same digest, after the first was stopped
(Ctrl-C, a dropped ssh session, a kill: the process may die at any time, it
writes nothing but this record and never cancels the job), finds the job by id,
or, when the submit was killed before the id was written, by name (in squeue,
else in the sbatch scripts submitit keeps in the job folder), and
waits for it or collects its result instead of submitting again. A job that
failed (its SLURM state, or the exception in its result) is reported in one
line naming its log and is submitted again by the next run. A record with
another digest whose job still runs is an error naming the job (the outputs
would race): wait for it or ``scancel`` it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths

from pipeline.cluster.executors import make_executor
from pipeline.cluster.slurm_jobs import (
    DOUBTFUL_STATES,
    LOST,
    PENDING_STATES,
    RUNNING_STATES,
    Patience,
    jobs_named,
    retried,
    slurm_states,
)
from pipeline.config import ExecutorConfig, Params
from pipeline.errors import ClusterError, DataError, GrarError
from pipeline.io import write_text_atomic
from pipeline.paths import portable

DEFAULT_POLL_S = 10.0


class StageJobFailed(GrarError):
    """A stage's SLURM job failed, was lost, or left an output missing; the message names the job and its log."""


class StageWaitTimeout(GrarError):
    """Waiting for a stage's SLURM job ran out of time (the job goes on; the next run collects it)."""


@dataclass(frozen=True)
class StageRecord:
    """``<log_dir>/stages/<name>.json``: the last job submitted for a stage (item)."""

    name: str  # <stage>[-<item>]
    digest: str  # of the params keys the stage reads
    token: str  # the job's name, recorded before sbatch
    job_id: str | None = None  # once sbatch answered
    log: str | None = None  # the job's stderr log

    def text(self) -> str:
        return (
            json.dumps(
                {"name": self.name, "digest": self.digest, "token": self.token, "job_id": self.job_id, "log": self.log},
                indent=2,
            )
            + "\n"
        )


def stage_name(stage: str, item: str | None) -> str:
    return stage if item is None else f"{stage}-{item}"


def stages_dir(params: Params) -> Path:
    """The records ``<name>.json`` and submitit folders ``<name>/`` of stage jobs."""
    return Path(params.executor.log_dir) / "stages"


def record_path(params: Params, name: str) -> Path:
    return stages_dir(params) / f"{name}.json"


def params_digest(params: Params, keys: Iterable[str], item: str | None) -> str:
    """SHA-256 of the values of the dotted params ``keys`` (and the item): what the stage's result depends on."""
    raw = params.model_dump(mode="json")
    values = {}
    for key in keys:
        node: Any = raw
        for part in key.split("."):
            node = node[part]
        values[key] = node
    text = json.dumps({"item": item, "params": values}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_executor(params: Params, stage: str) -> ExecutorConfig:
    """``executor`` with kind slurm and ``executor.slurm`` overridden by ``executor.stages.<stage>.slurm``."""
    overrides = getattr(params.executor.stages, stage).slurm.model_dump(exclude_none=True)
    slurm = params.executor.slurm.model_copy(update=overrides)
    return params.executor.model_copy(update={"kind": "slurm", "slurm": slurm})


def read_record(path: Path) -> StageRecord | None:
    """The record at ``path``; ``None`` when there is none; ``DataError`` naming it when it is not one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the stage job record ({err}); delete it to submit afresh") from None
    try:
        return StageRecord(
            str(raw["name"]),
            str(raw["digest"]),
            str(raw["token"]),
            raw.get("job_id") and str(raw["job_id"]),
            raw.get("log") and str(raw["log"]),
        )
    except (KeyError, TypeError):
        raise DataError(f"{path}: not a stage job record; delete it to submit afresh") from None


class StageJob:
    """What the SLURM job runs: ``work(params, *args)``. A function of a module run as ``__main__`` (a stage's
    ``python -m stages.X``) is pickled by its module's import name, so the job imports it rather than a copy."""

    def __init__(self, work: Callable[..., object]) -> None:
        module = work.__module__
        if module == "__main__":
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            module = spec.name if spec is not None else module
        self.module, self.function = module, work.__qualname__
        importable = module != "__main__" and "<" not in self.function  # not a script's, a closure or a lambda
        self.work = None if importable else work  # else pickled by value

    def __call__(self, params: Params, *args: Any) -> None:
        work = self.work or getattr(importlib.import_module(self.module), self.function)
        work(params, *args)


def run_stage(
    params: Params,
    stage: str,
    work: Callable[..., object],
    *,
    outputs: Sequence[str | Path],
    keys: Iterable[str],
    item: str | None = None,
    args: tuple = (),
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float | None = None,
) -> None:
    """Run ``work(params, *args)`` where ``executor.stages.<stage>.kind`` says (module docstring).

    ``outputs``: the paths the work writes (as dvc.yaml declares them), checked
    after a SLURM job; ``keys``: the params keys the stage reads (its dvc.yaml
    ``params``), digested to tell the job of this config from an older one.
    """
    if getattr(params.executor.stages, stage).kind == "local":
        work(params, *args)
        return
    name = stage_name(stage, item)
    digest = params_digest(params, keys, item)
    record = find_job(params, name, digest, outputs)
    if record is None:
        record = submit_stage(params, stage, name, digest, work, args)
    collect(record, outputs, wait_stage(record, poll_s, timeout_s))


def dataset_stage(
    stage: str, work: Callable[[Params, str], object], output: Callable[[Params, str], Path], keys: Iterable[str]
) -> Callable[[Params, str], None]:
    """A per-dataset stage's ``work(params, name)`` (writing ``output(params, name)``) run by ``run_stage``."""
    keys = tuple(keys)

    def run(params: Params, name: str) -> None:
        run_stage(params, stage, work, outputs=[output(params, name)], keys=keys, item=name, args=(name,))

    return run


def find_job(params: Params, name: str, digest: str, outputs: Sequence[str | Path] = ()) -> StageRecord | None:
    """The recorded job of this digest that still runs or succeeded with ``outputs`` in place (to wait for or
    collect), else ``None`` (submit). A job of another digest that still runs is a ``ClusterError``; a failed
    one is reported."""
    path = record_path(params, name)
    record = read_record(path)
    if record is None:
        return None
    job_id = record.job_id
    if job_id is None:  # the submit was killed after sbatch, before it wrote the id: find the job by its name
        job_id = jobs_named([record.token]).get(record.token, {}).get(0) or submitted_as(
            stages_dir(params) / name, record.token
        )
        if job_id is None:
            return None  # killed before sbatch: nothing was submitted
        record = StageRecord(
            record.name,
            record.digest,
            record.token,
            job_id,
            str(Path(record.log or stages_dir(params) / name) / f"{job_id}_0_log.err"),
        )
        write_text_atomic(path, record.text())
    state = slurm_states([job_id])[job_id]
    active = state in RUNNING_STATES | PENDING_STATES | DOUBTFUL_STATES
    if record.digest != digest:
        if active:
            raise ClusterError(
                f"stage {name}: job {job_id} of other parameters still runs ({state}) and would "
                f"overwrite the outputs: wait for it to end or `scancel {job_id.split('_')[0]}`"
            )
        return None
    if active:
        print(f"stage {name}: collecting job {job_id} ({state}), submitted earlier", file=sys.stderr, flush=True)
        return record
    problem = job_problem(record, state)
    missing = missing_outputs(outputs)
    if problem is None and missing:
        problem = f"job {job_id} succeeded earlier, but {', '.join(missing)} is gone"
    if problem is None:
        print(f"stage {name}: job {job_id} finished earlier: collecting it", file=sys.stderr, flush=True)
        return record
    print(f"stage {name}: {problem}; submitting again", file=sys.stderr, flush=True)
    return None


def submitted_as(folder: Path, token: str) -> str | None:
    """The job id of the sbatch script submitit kept in ``folder`` (``<job id>_submission.sh``) for the job named
    ``token``: finds a job that squeue has forgotten (ended more than ``MinJobAge`` ago)."""
    line = f"#SBATCH --job-name={token}\n"
    for script in sorted(folder.glob("*_submission.sh")) if folder.is_dir() else []:
        job_id = script.name.removesuffix("_submission.sh")
        try:
            if job_id.isdigit() and line in script.read_text(encoding="utf-8", errors="replace"):
                return job_id
        except OSError:
            continue
    return None


def submit_stage(
    params: Params, stage: str, name: str, digest: str, work: Callable[..., object], args: tuple
) -> StageRecord:
    """Submit the stage's job; its name is recorded before ``sbatch``, its id and log after."""
    path = record_path(params, name)
    folder = stages_dir(params) / name
    record = StageRecord(name, digest, f"grar-{name}-{uuid.uuid4().hex[:8]}", log=portable(folder))
    write_text_atomic(path, record.text())
    job = make_executor(stage_executor(params, stage), folder, record.token).submit(StageJob(work), params, *args)
    record = StageRecord(name, digest, record.token, job.job_id, portable(job.paths.stderr))
    write_text_atomic(path, record.text())
    print(f"stage {name}: submitted SLURM job {job.job_id} (log {record.log})", file=sys.stderr, flush=True)
    return record


def wait_stage(record: StageRecord, poll_s: float, timeout_s: float | None) -> str:
    """Poll the job's SLURM state until it will not run any more; return that state. Bounded as ``grid.wait``:
    failed queries retried as ``grid.retried`` does, ``Patience`` for UNKNOWN/PREEMPTED, ``timeout_s``."""
    assert record.job_id is not None
    patience, last = Patience(), None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        states = retried(
            lambda: slurm_states([record.job_id]), poll_s, lambda text: print(text, file=sys.stderr, flush=True)
        )
        state = states[record.job_id]
        expired = patience.observe(states)
        if state not in RUNNING_STATES | PENDING_STATES and (state not in DOUBTFUL_STATES or record.job_id in expired):
            return state
        if state != last:
            print(f"stage {record.name}: job {record.job_id} {state}", file=sys.stderr, flush=True)
            last = state
        if deadline is not None and time.monotonic() + poll_s > deadline:
            raise StageWaitTimeout(
                f"stage {record.name}: job {record.job_id} still {state} after {timeout_s:g} s; "
                "it goes on, and the next run of the stage collects it"
            )
        time.sleep(poll_s)


def job_problem(record: StageRecord, state: str) -> str | None:
    """Why the ended job did not succeed (one line naming its log), or ``None`` when its result is a success."""
    outcome = job_outcome(record)
    if outcome is not None and outcome[0] == "success":
        return None
    where = f"log {record.log}"
    if outcome is not None:
        lines = [line.strip() for line in str(outcome[1]).splitlines() if line.strip()]
        return f"job {record.job_id} failed ({lines[-1] if lines else 'error'}), {where}"
    if state in LOST:
        return f"job {record.job_id} lost (SLURM does not know it, and it left no result), {where}"
    return f"job {record.job_id} ended {state} without a result, {where}"


def job_outcome(record: StageRecord) -> tuple[str, Any] | None:
    """submitit's result pickle of the job: ``("success", None)`` or ``("error", traceback)``; ``None`` if absent."""
    assert record.job_id is not None and record.log is not None
    paths = JobPaths(Path(record.log).parent, job_id=record.job_id, task_id=0)
    try:
        return submitit.core.utils.pickle_load(paths.result_pickle)
    except (OSError, EOFError, ValueError):
        return None


def missing_outputs(outputs: Sequence[str | Path]) -> list[str]:
    """The paths of ``outputs`` that do not exist."""
    return [str(path) for path in outputs if not Path(path).exists()]


def collect(record: StageRecord, outputs: Sequence[str | Path], state: str) -> None:
    """After the job ended in SLURM ``state``: ``StageJobFailed`` (one line, the log) unless it succeeded and
    wrote every output."""
    problem = job_problem(record, state)
    if problem is not None:
        raise StageJobFailed(f"stage {record.name}: {problem}; the next run submits it again")
    missing = missing_outputs(outputs)
    if missing:
        raise StageJobFailed(
            f"stage {record.name}: job {record.job_id} succeeded but {', '.join(missing)} is "
            f"missing (are the outputs on a file system the compute nodes share?), log {record.log}"
        )
    print(f"stage {record.name}: job {record.job_id} done", file=sys.stderr, flush=True)
