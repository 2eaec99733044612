"""Running work on a cluster: grids of runs, SLURM jobs, a stage's work as one job, cost plans, a test cluster.

Modules: ``grids`` (cells x seeds -> runs, run folders, the states of runs),
``index`` (the grid indexes ``<grid.runs>/grids/<grid>.json`` and their lock),
``submit`` (running grids through ``executor.kind``, waiting for them, the train
stage), ``reuse`` (finished runs of another runs folder linked in, not trained
again), ``slurm_jobs`` (SLURM's job-state vocabulary, its queries, the polls'
patience), ``executors`` (submitit executors from ``executor``), ``stage_jobs``
(a DVC stage's work in-process or as one SLURM job), ``plan`` (``grar grid
plan``: what a grid costs; a run's progress and ETA), ``local_test_cluster``
(the one-node SLURM cluster of the tests, ``grar cluster``).

May import: the shared ground (``pipeline/*.py``). Training is imported lazily,
inside the job that trains (``submit.run_cell``), so finding, naming and
following runs needs no torch.
"""
