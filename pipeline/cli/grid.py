"""`grar grid`: list, submit, inspect and wait for the grids (Tables 1-6)."""

from __future__ import annotations

import argparse

from pipeline.cli.main import require_params
from pipeline.config import Params
from pipeline.errors import ConfigError

HELP = "list, submit, inspect and wait for the grids (Tables 1-6)"
DESCRIPTION = """\
A grid (grid.grids.NAME in params.yaml) is a list of cells, each a set of
overrides on the base config, or {set: SHARED, cells: [...]} whose SHARED
overrides apply to every cell before its own (a cell may override a shared
key); --set overrides reach every cell that does not set the key itself.
Each cell runs once per seed of grid.seeds. Each run trains into
grid.runs/<cell>-s<seed>-<hash10>/ (hash of its resolved config: identical
configs of different grids share one folder and are trained once) and is done
when that folder holds metrics.json.

  list           the grids and their cells, each with its effective overrides
  submit NAME    run (executor.kind local or debug: here, one after another) or
                 submit (slurm: one job array) every run that is not done and
                 not queued; prints the job ids. Submitting again runs only the
                 missing and failed runs.
  status NAME    one line per run: cell, seed, state (pending / running / done /
                 failed), for a running run the iterations done / total and
                 an ETA (median seconds of its last 50 logged iterations x
                 iterations left; evaluation not counted), mIoU when done, the
                 log and the reason when it failed; from any shell (job ids
                 are read from grid.runs/grids/NAME.json, states from SLURM)
  wait NAME      block with a progress bar until no run is queued or running,
                 record the results in the grid index, print the status;
                 --timeout bounds the wait
  plan NAME      before or during a grid: each run's state and expected cost
                 (iterations x seconds per iteration measured from the
                 train_log.csv of runs with the same backbone, crop,
                 train.device and train.precision, else "unknown"),
                 GPU-hours (gpus_per_node x nodes), the wall time at
                 executor.slurm.array_parallelism,
                 and a warning for runs that cannot finish within
                 executor.slurm.timeout_min without requeues

`dvc repro` (stage train) does submit + wait for every grid; runs submitted
earlier with `grar grid submit` are waited for, not submitted again.

What each state means, and when a job SLURM lost or preempted counts as
failed: pipeline/cluster/grids.py (docs/training.md).

Exit codes: 0 fine, 1 a run failed or was never submitted (submit with a local
executor, wait), or wait timed out, 2 bad arguments or parameters (e.g. an
unknown grid)."""

ACTIONS = ("list", "submit", "status", "wait", "plan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, metavar="ACTION", help=f"one of {', '.join(ACTIONS)} (see above)")
    parser.add_argument("name", nargs="?", metavar="NAME", help="grid name (grar grid list shows them)")
    parser.add_argument(
        "--poll",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait: seconds between two looks at the queue (default: 10)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="wait: give up after SECONDS (exit 1, naming the runs still queued or running)",
    )


def run(args: argparse.Namespace) -> int:
    params = require_params(args)
    if args.action == "list":
        print(list_text(params))
        return 0
    if args.name is None:
        raise ConfigError(f"grar grid {args.action} needs a grid NAME; grids: {', '.join(params.grid.grids)}")
    if args.poll <= 0:
        raise ConfigError(f"--poll {args.poll}: must be > 0 seconds")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout}: must be > 0 seconds")
    from pipeline.cluster import grids, submit

    params.grid.cells(args.name)  # an unknown name fails before anything starts
    if args.action == "status":
        print(status_text(params, args.name, grids.status(params, args.name)))
        return 0
    if args.action == "plan":
        from pipeline.cluster.plan import grid_plan, plan_text

        states = {(s.run.cell, s.run.seed): s.state for s in grids.status(params, args.name)}
        print(plan_text(grid_plan(params, args.name, states)))
        return 0
    if args.action == "wait":
        try:
            states = submit.wait(params, [args.name], args.poll, args.timeout)[args.name]
        except submit.GridFailed:
            print(status_text(params, args.name, grids.status(params, args.name)))
            raise
        print(status_text(params, args.name, states))
        return 0
    submission = submit.submit(params, args.name)
    print(submit_text(params, args.name, submission))
    if params.executor.kind != "slurm":
        submit.check_complete({args.name: submission.states})
    return 0


def list_text(params: Params) -> str:
    """Every grid: its cells, each with its effective overrides (the grid's shared ones, then its own)."""

    seeds = params.grid.seeds
    lines = []
    for name in params.grid.grids:
        cells = params.grid.cells(name)
        lines.append(f"{name}: {len(cells)} cells x {len(seeds)} seed(s) {list(seeds)}")
        width = max((len(cell) for cell in cells), default=0)
        lines += [
            f"  {cell:<{width}}  " + " ".join(f"{key}={value}" for key, value in overrides.items())
            for cell, overrides in cells.items()
        ]
    return "\n".join(lines) if lines else "no grids in grid.grids"


def status_text(params: Params, name: str, states: list) -> str:
    """A table, one run per line: cell, seed, state, progress of a running run (iterations done / total and
    the ETA from its train_log.csv, ``pipeline.cluster.plan.progress_text``), mIoU (%) when done, job id, log (or run
    folder when done), reason (why it failed, or who trains it)."""
    from pipeline.cluster.grids import STATES
    from pipeline.paths import grid_index

    counts = ", ".join(f"{sum(s.state == state for s in states)} {state}" for state in STATES)
    from pipeline.cluster.plan import progress_text

    rows = [("cell", "seed", "state", "progress", "mIoU %", "job", "log / run folder", "reason")]
    for s in states:
        miou = f"{100 * s.metrics['miou']:.2f}" if s.metrics is not None else "-"
        where = str(s.run.run_dir) if s.state == "done" else (s.log or "-")
        total = s.run.params.train.schedule.iterations
        progress = progress_text(s.run.run_dir, total, s.suspended) if s.state == "running" else "-"
        rows.append((s.run.cell, str(s.run.seed), s.state, progress, miou, s.job_id or "-", where, s.reason or ""))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    table = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([f"grid {name}: {len(states)} runs: {counts} (index {grid_index(params, name)})", *table])


def submit_text(params: Params, name: str, submission) -> str:
    """What ``submit`` did, in one or two lines."""
    if submission.job_ids:
        array = submission.job_ids[0].split("_")[0]
        return (
            f"grid {name}: submitted {submission.ran} run(s) as SLURM job array {array}: "
            f"{' '.join(submission.job_ids)}\n"
            f"follow with: grar grid status {name}  (or wait for them: grar grid wait {name})"
        )
    if submission.ran == 0:
        queued = sum(s.active for s in submission.states)
        return f"grid {name}: nothing to run ({len(submission.states) - queued} run(s) done, {queued} queued)"
    return status_text(params, name, submission.states)
