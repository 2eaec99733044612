"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cluster import local_test_cluster as cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """The slurm.conf of the local SLURM test cluster (``make cluster-up``), exported as ``SLURM_CONF``.

    When the node does not accept jobs, tests using this fixture skip with the
    reason, except in CI (``CI=true``), where they fail: CI exists to check them.
    """
    root = cluster.cluster_root()
    state = cluster.node_state(root)
    if state not in cluster.USABLE_STATES:
        reason = f"local SLURM test cluster not up (node {cluster.short_hostname()}: {state}); run `make cluster-up`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(root / "slurm.conf"))
        yield root / "slurm.conf"
