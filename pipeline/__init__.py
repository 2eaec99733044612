"""grar: the pipeline around the GRAr model, one folder per concern.

The package root is the shared ground every folder may import, and which
imports no folder: ``config`` (the typed config tree of params.yaml),
``errors`` (user-facing errors, shown as one line), ``io`` (atomic writes,
output checks), ``lock`` (locks on shared storage), ``paths`` (artifact paths
from params), ``rundir`` (the run-folder contract and a run's identity),
``download`` (published files: resumable, verified downloads), ``weights``
(the backbones' published ImageNet files), ``paper`` (the paper's tables).

The folders, each with a docstring saying what lives there and what it may
import: ``datasets`` (data in: download, extract, convert to the canonical
layout), ``stats`` (co-occurrence statistics, Eq. 1), ``training`` (one run:
model, loop, checkpoints, inference), ``scores`` (mIoU, the paired bootstrap,
the evaluate stage), ``cluster`` (grids, SLURM, stage jobs), ``bench``
(benchmarks), ``report`` (the report site), ``cli`` (the ``grar`` command).
"""

__version__ = "0.1.0"
