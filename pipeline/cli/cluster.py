"""`grar cluster`: start, stop or inspect the local single-node SLURM test cluster."""

from __future__ import annotations

import argparse

from pipeline.cluster import local_test_cluster

HELP = "start, stop or inspect the local one-node SLURM test cluster (used by `make test`)"
DESCRIPTION = f"""\
A real SLURM cluster on this machine for tests and trials: Debian's munged,
slurmctld and slurmd, one node named after this machine with its CPUs and memory,
one partition ({local_test_cluster.PARTITION}). Needs root and the Debian packages munge,
slurmctld, slurmd, slurm-client (`make slurm-packages` installs them).

  up       start what is not running and wait until the node accepts jobs
           (a no-op when the cluster runs already)
  down     stop the daemons `up` started, by their recorded pids
  status   print the daemons, the node state and where the logs are
           (exit 0 when the node accepts jobs, 1 otherwise)

Configuration, state and logs live in ${local_test_cluster.ROOT_ENV} (default
{local_test_cluster.DEFAULT_ROOT}); `up` also writes /etc/slurm/slurm.conf when no other
cluster owns that file, so `sinfo`, `sbatch` and submitit find the cluster."""
NO_PARAMS = True  # the cluster does not depend on params.yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status"), help="what to do (see above)")


def run(args: argparse.Namespace) -> int:
    root = local_test_cluster.cluster_root()
    if args.action == "up":
        print(local_test_cluster.up(root))
        return 0
    if args.action == "down":
        print("\n".join(local_test_cluster.down(root)))
        return 0
    ready, lines = local_test_cluster.status(root)
    print("\n".join(lines))
    return 0 if ready else 1
