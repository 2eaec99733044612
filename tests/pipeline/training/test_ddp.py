"""Data-parallel training: the single-process path, global-batch BatchNorm on CPU, a 2-task SLURM job.

The equivalence tested: a job of W processes, each given batch_size / W
samples of the global batch, computes the update one process computes on the
whole batch. Two things make it hold exactly (up to float rounding):

- BatchNorm normalises with the global batch's statistics (SyncBatchNorm on
  GPU, ``AllReduceBatchNorm2d`` on CPU, where torch's SyncBatchNorm refuses to
  run);
- DDP averages the ranks' gradients, so the loss must be the mean of the ranks'
  losses: true when every rank has as many labelled pixels (no ignore pixels
  here: flip-only augmentation, crops inside the images) and regions.

Dropout draws its masks from each process's own random stream: no two process
layouts can draw the same masks, so both runs here set dropout to identity
(``Dropout2d.forward``) and compare the deterministic computation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_run import IMAGE_SIZE, VAL_IMAGES
from torch import nn

from pipeline.cluster.executors import make_executor
from pipeline.config import ExecutorConfig, SlurmConfig, with_overrides
from pipeline.rundir import read_log
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.distributed import AllReduceBatchNorm2d, Ranks, convert_batchnorm, distributed, sync_batchnorm
from pipeline.training.run import run_cell

FLIP_ONLY = {"hflip": True, "scale": [1.0, 1.0], "rotate": 0.0}


def no_dropout(module, x):
    return x


def test_the_single_process_path_needs_no_slurm(monkeypatch):
    for name in ("SUBMITIT_FOLDER", "SLURM_JOB_ID", "SLURM_NTASKS", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed(torch.device("cpu")) as ranks:
        assert ranks == Ranks(0, 1, 0) and ranks.main and not ranks.parallel
        assert not dist.is_initialized()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert sync_batchnorm(model, torch.device("cpu"), ranks) is model
    assert type(model[1]) is nn.BatchNorm2d


def test_all_reduce_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(5)
    plain.weight.data.uniform_(0.5, 2)
    plain.bias.data.uniform_(-1, 1)
    converted = convert_batchnorm(nn.Sequential(nn.Identity(), plain), AllReduceBatchNorm2d)
    assert type(converted[1]) is AllReduceBatchNorm2d and converted[1] is not plain
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), converted[1].state_dict().values()))
    x = torch.randn(3, 5, 7, 9)
    assert torch.equal(converted(x), plain(x))


def batchnorm_worker(rank: int, world_size: int, init_file: str, x: torch.Tensor, queue) -> None:
    """One rank: global-batch BatchNorm on its share of ``x``; send back output, input gradient, running stats."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        norm = AllReduceBatchNorm2d(x.shape[1])
        norm.weight.data.uniform_(0.5, 2)
        share = x.chunk(world_size)[rank].clone().requires_grad_()
        out = norm(share)
        (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
        # numpy copies, not tensors: torch's queue passes tensor storage as file descriptors, which the parent
        # cannot receive once this process has exited ("Connection reset by peer")
        tensors = (out.detach(), share.grad, norm.running_mean, norm.running_var, norm.weight.grad)
        queue.put((rank, *(t.detach().numpy().copy() for t in tensors)))
    finally:
        dist.destroy_process_group()


def test_all_reduce_batchnorm_over_two_processes_is_batchnorm_of_the_whole_batch(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 5, 6) * 3 + 1
    context = mp.get_context("fork")  # as DataLoader workers: one thread in the child
    queue = context.Queue()
    workers = [
        context.Process(target=batchnorm_worker, args=(r, 2, str(tmp_path / "init"), x, queue)) for r in range(2)
    ]
    for worker in workers:
        worker.start()
    results = {item[0]: [torch.from_numpy(a) for a in item[1:]] for item in (queue.get(timeout=120) for _ in workers)}
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3)
    norm.weight.data.uniform_(0.5, 2)
    whole = x.clone().requires_grad_()
    out = norm(whole)
    halves = [o.detach() for o in out.chunk(2)]
    weights = torch.cat([torch.arange(h.numel()).view_as(h).float().sin() for h in halves])
    (out * weights).sum().backward()
    for rank in range(2):
        got_out, got_grad, running_mean, running_var, weight_grad = results[rank]
        assert torch.allclose(got_out, halves[rank], atol=1e-5)
        assert torch.allclose(got_grad, whole.grad.chunk(2)[rank], atol=1e-5)
        assert torch.allclose(running_mean, norm.running_mean, atol=1e-6)
        assert torch.allclose(running_var, norm.running_var, atol=1e-5)
    # every rank holds its own share of the weight gradient; DDP sums them (as an average over the ranks)
    assert torch.allclose(results[0][4] + results[1][4], norm.weight.grad, atol=1e-4)


def ddp_job(params, run_dir: Path) -> dict:
    """What each task of the SLURM job runs: ``run_cell`` without dropout (see the module docstring)."""
    nn.Dropout2d.forward = no_dropout
    return run_cell(params, run_dir)


@pytest.mark.slurm
def test_a_two_task_cpu_job_makes_the_single_process_update(slurm_cluster, tiny_project, tmp_path, monkeypatch):
    params = with_overrides(
        tiny_project,
        {
            "train.batch_size": 4,
            "train.augment": FLIP_ONLY,
            "train.schedules.embedded": {"lr": 0.02, "iterations": 2},
            "eval.multi_scale": False,
        },
    )
    executor = ExecutorConfig(
        kind="slurm",
        log_dir=str(tmp_path / "logs"),
        slurm=SlurmConfig(
            partition=None,
            gpus_per_node=0,
            tasks_per_node=2,
            cpus_per_task=1,
            mem_gb=2,
            timeout_min=5,
            array_parallelism=1,
            additional={},
        ),
    )
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the job's Python cannot import a test module
    try:
        job = make_executor(executor, tmp_path / "logs", "ddp").submit(ddp_job, params, tmp_path / "ddp")
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    results = job.results()  # one per task (the job's time limit bounds the wait)

    monkeypatch.setattr(nn.Dropout2d, "forward", no_dropout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job (1 CPU per task)
    try:
        single = run_cell(params, tmp_path / "single")
    finally:
        torch.set_num_threads(threads)

    parallel = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    reference = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    assert len(parallel["rng"]["torch"]) == 2 and len(reference["rng"]["torch"]) == 1  # 2 processes, 1 process
    assert parallel["model"].keys() == reference["model"].keys()
    for key, value in reference["model"].items():
        assert torch.allclose(parallel["model"][key].float(), value.float(), rtol=1e-5, atol=1e-5), key
    momentum = [s["momentum_buffer"] for s in reference["optimizer"]["state"].values()]
    parallel_momentum = [s["momentum_buffer"] for s in parallel["optimizer"]["state"].values()]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(parallel_momentum, momentum))
    logs = [read_log(tmp_path / run / "train_log.csv") for run in ("ddp", "single")]
    for row, expected in zip(*logs):
        for term in ("loss", "ce", "aux", "coarse", "sr"):  # the logged terms are the means over the ranks
            assert float(row[term]) == pytest.approx(float(expected[term]), rel=1e-5)
    confusion = np.load(tmp_path / "ddp" / "confusion.npy")
    assert confusion.sum() == VAL_IMAGES * IMAGE_SIZE**2  # the ranks' shares of the val split add up to all of it
    assert [r["provenance"]["run_dir"] for r in results] == [str(tmp_path / "ddp")] * 2
    assert results[0]["miou"] == pytest.approx(single["miou"], abs=0.02)
