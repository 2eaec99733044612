"""Fixtures of the trainer tests (``test_data``, ``test_train``, ``test_evaluation``, ``test_ddp``)."""

from __future__ import annotations

import pytest
import torch
from tiny_run import make_project, tiny

from pipeline.config import Params


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Params:
    """The tiny project (built once per test session) with the tiny training settings."""
    return tiny(make_project(tmp_path_factory.mktemp("tiny-project")))


@pytest.fixture
def one_thread():
    """Train with one thread: on a shared 2-core machine a second OpenMP thread waits on every other process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
