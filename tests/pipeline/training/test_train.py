"""The trainer: schedule, hash, statistics inputs, exact resume, preemption signals, the run folder, `grar train`."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from tiny_run import IMAGE_SIZE, VAL_IMAGES

from pipeline import lock, rundir
from pipeline.cli.main import main
from pipeline.config import ADDED_KEYS, with_overrides
from pipeline.errors import DataError, GrarError
from pipeline.paths import dataset_dir, stats_dir
from pipeline.rundir import config_hash, read_log
from pipeline.scores.per_image import read_image_confusions
from pipeline.stats.affinity import frequency
from pipeline.stats.files import load_affinity, load_counts
from pipeline.training import build, checkpoint, inputs, loop
from pipeline.training import run as run_module
from pipeline.training.checkpoint import Interrupted, load_checkpoint
from pipeline.training.data import SegmentationDataset
from pipeline.training.inference import evaluate_model
from pipeline.training.inputs import build_model, frequency_class_weights
from pipeline.training.loop import optimizer_groups, poly_lr, train
from pipeline.training.run import load_run, load_run_model, run_cell

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same(a, b, path="checkpoint"):
    """Nested dicts / lists of tensors and plain values are identical (tensors: ``torch.equal``)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    else:
        assert a == b, path


def log_without_times(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_log(run_dir / "train_log.csv")]


@pytest.fixture(scope="module")
def straight(tiny_project, tmp_path_factory):
    """An uninterrupted 6-iteration run (its checkpoint and log are the reference)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("straight")
    train(tiny_project, run_dir)
    torch.set_num_threads(threads)
    return run_dir


def test_poly_schedule():
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9, rel=1e-12)
    assert poly_lr(0.02, 99, 100, 1.0) == pytest.approx(0.0002, rel=1e-12)


def test_config_hash_ignores_what_does_not_change_the_model(tiny_project):
    digest = config_hash(tiny_project)
    assert len(digest) == 64 and int(digest, 16) >= 0
    for key, value in [
        ("executor.kind", "debug"),
        ("grid.seeds", [5]),
        ("bench.repeats", 9),
        ("profile", "x"),
        ("data.workers", 7),
        ("stats.workers", 7),
        ("train.workers", 3),
        ("data.mirror", "file:///m"),
        ("data.folders.other", "/elsewhere/other"),
        ("data.datasets", ["embedded", "ade20k"]),
    ]:
        assert config_hash(with_overrides(tiny_project, {key: value})) == digest, key
    for key, value in [
        ("seed", 1),
        ("model.head", "fcn"),
        ("stats.normalisation", "conditional"),
        ("eval.flip", False),
        ("train.schedules.embedded.iterations", 7),
    ]:
        assert config_hash(with_overrides(tiny_project, {key: value})) != digest, key


def test_config_hash_covers_the_folder_a_run_trains_on(tiny_project):
    mine = with_overrides(
        tiny_project,
        {
            "data.folders.mine": "/data/mine",
            "train.dataset": "mine",
            "train.schedules.mine": {"lr": 0.01, "iterations": 5},
        },
    )
    digest = config_hash(mine)
    assert config_hash(with_overrides(mine, {"data.folders.other": "/data/other"})) == digest
    for spec in ("/data/mine2", {"path": "/data/mine", "ignore": 0}, {"path": "/data/mine", "remap": {1: 2}}):
        assert config_hash(with_overrides(mine, {"data.folders.mine": spec})) != digest, spec


def test_config_hash_covers_the_prepared_data(tiny_project, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset_dir(tiny_project, "embedded"), data / "embedded")
    params = with_overrides(tiny_project, {"data.root": str(data)})
    marker = json.loads((data / "embedded" / ".grar-dataset").read_text())
    assert len(marker["sha256"]) == 64 and marker["files"] == 2 * (10 + 3) + 2  # images, labels, classes, scenes
    digest = config_hash(params)
    (data / "embedded" / ".grar-dataset").write_text(json.dumps({**marker, "sha256": "0" * 64}))
    assert config_hash(params) != digest  # re-prepared data: another run
    (data / "embedded" / ".grar-dataset").unlink()
    assert config_hash(params) not in (digest, config_hash(tiny_project))  # not prepared: no fingerprint


def test_frequency_class_weights_median_balancing():
    # images holding each class: median over the present ones (4, 1, 2) is 2; an absent class weighs 1
    assert frequency_class_weights(np.array([4, 1, 2, 0])).tolist() == [0.5, 2.0, 1.0, 1.0]
    assert frequency_class_weights(np.array([0, 0])).tolist() == [1.0, 1.0]


def test_sr_class_weights_come_from_the_class_statistics(tiny_project):
    params = with_overrides(tiny_project, {"train.loss.sr_class_weights": "frequency"})
    images = pq.read_table(stats_dir(tiny_project, "embedded") / "classes.parquet").column("images").to_numpy()
    weights = inputs.sr_class_weights(params, 24)
    assert torch.equal(weights, torch.from_numpy(frequency_class_weights(images)).float())
    assert inputs.sr_class_weights(tiny_project, 24) is None  # uniform


def test_affinity_is_recomputed_with_the_cells_normalisation(tiny_project):
    path = stats_dir(tiny_project, "embedded") / "cooccurrence.parquet"
    t = load_counts(path, 24)
    printed = inputs.affinity_matrix(tiny_project, 24)
    conditional = inputs.affinity_matrix(with_overrides(tiny_project, {"stats.normalisation": "conditional"}), 24)
    assert torch.allclose(printed, torch.from_numpy(load_affinity(path, 24)))  # the file was written "printed"
    assert torch.equal(conditional, torch.from_numpy(frequency(t, "conditional")).float())
    assert not torch.allclose(printed, conditional)
    assert inputs.affinity_matrix(with_overrides(tiny_project, {"model.grar.edges": "conv"}), 24) is None
    assert inputs.affinity_matrix(with_overrides(tiny_project, {"model.head": "fcn"}), 24) is None


def test_log_has_every_term_and_their_weighted_sum(straight, tiny_project):
    rows = read_log(straight / "train_log.csv")
    assert list(rows[0]) == [
        "iteration",
        "lr",
        "loss",
        "ce",
        "aux",
        "coarse",
        "sr",
        "danet",
        "seconds",
        "lambda_pos",
        "lambda_neg",
    ]
    reasoning = load_run(straight).model.head.reasoning
    assert float(rows[-1]["lambda_pos"]) == pytest.approx(reasoning.lambda_positive.item(), rel=1e-6)
    assert float(rows[-1]["lambda_neg"]) == pytest.approx(reasoning.lambda_negative.item(), rel=1e-6)
    assert float(rows[0]["lambda_pos"]) != 0  # λ starts at 0 and moves from the first step
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["lr"]) for r in rows] == pytest.approx([poly_lr(0.02, i, 6, 0.9) for i in range(6)], rel=1e-6)
    w = tiny_project.train.loss
    for r in rows:
        total = float(r["ce"]) + w.aux * float(r["aux"]) + w.coarse * float(r["coarse"]) + w.sr * float(r["sr"])
        assert float(r["loss"]) == pytest.approx(total, rel=1e-5)
    state = load_checkpoint(straight / "checkpoint.pt")
    assert state["iteration"] == 6 and state["config_hash"] == config_hash(tiny_project)
    assert state["num_classes"] == 24 and state["class_names"][0] == "bedroom.wall"
    assert set(state) == {
        "model",
        "criterion",
        "optimizer",
        "iteration",
        "rng",
        "params",
        "config_hash",
        "num_classes",
        "class_names",
    }


def test_backbone_and_head_groups_follow_the_schedule_at_their_multiples(tiny_project, tmp_path):
    model = build_model(tiny_project, 24)
    criterion = build.build_criterion(tiny_project.train.loss, 24, model.head.feature_channels)
    step = build.TrainingStep(model, criterion)
    groups = optimizer_groups(step, 10.0)
    assert [(g["name"], g["lr_mult"]) for g in groups] == [("backbone", 1.0), ("head", 10.0)]
    backbone = list(model.backbone.parameters())
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in backbone]
    others = [p for name, p in step.named_parameters() if not name.startswith("model.backbone.")]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in others]
    assert any(name.startswith("criterion.") for name, _ in step.named_parameters())  # the SR-Loss classifier
    assert any(name.startswith("model.aux_head.") for name, _ in step.named_parameters())
    # a 3-iteration run at base lr 0.02, mult 3: the checkpoint holds both groups at the last poly lr x their mult
    train(with_overrides(tiny_project, {"train.head_lr_mult": 3.0, "train.schedules.embedded.iterations": 3}), tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [(g["name"], g["lr_mult"]) for g in saved] == [("backbone", 1.0), ("head", 3.0)]
    last = poly_lr(0.02, 2, 3, 0.9)
    assert [g["lr"] for g in saved] == pytest.approx([last, 3 * last], rel=1e-12)
    assert len(saved[0]["params"]) == len(backbone) and len(saved[1]["params"]) == len(others)


def test_a_dataset_schedule_sets_its_own_head_multiple(tiny_project, tmp_path):
    """train.schedules[dataset].head_lr_mult wins over train.head_lr_mult for that dataset (the paper profile's
    per-dataset lr), and only for it."""
    params = with_overrides(
        tiny_project,
        {
            "train.head_lr_mult": 3.0,
            "train.schedules.embedded": {"lr": 0.02, "iterations": 2, "head_lr_mult": 5.0},
            "train.schedules.ade20k": {"lr": 0.01, "iterations": 9, "head_lr_mult": 1.0},
        },
    )
    assert params.train.head_mult == 5.0
    assert with_overrides(params, {"train.schedules.embedded.head_lr_mult": None}).train.head_mult == 3.0
    train(params, tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [(g["name"], g["lr_mult"]) for g in saved] == [("backbone", 1.0), ("head", 5.0)]
    assert [g["lr"] for g in saved] == pytest.approx([poly_lr(0.02, 1, 2, 0.9), 5 * poly_lr(0.02, 1, 2, 0.9)])


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_train_precision_reaches_training_and_evaluation(tiny_project, tmp_path, monkeypatch, precision):
    """train.precision is the autocast of the training forward and of every evaluation pass."""
    from pipeline.training import distributed, inference

    seen = []

    def recording(device, wanted):
        seen.append((device.type, wanted))
        return distributed.amp(device, wanted)

    monkeypatch.setattr(loop, "amp", recording)
    monkeypatch.setattr(inference, "amp", recording)
    params = with_overrides(tiny_project, {"train.precision": precision, "train.schedules.embedded.iterations": 2})
    run_cell(params, tmp_path / "run")
    assert set(seen) == {("cpu", precision)} and len(seen) > 2  # 2 training steps + the evaluation passes


def test_autocast_is_bf16_on_cuda_only_for_bf16():
    from pipeline.training.distributed import amp

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for precision in ("bf16", "fp32"):
        with amp(cpu, precision):  # CPU runs never autocast: float32 as before train.precision existed
            assert not torch.is_autocast_enabled("cpu")
            assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    assert not isinstance(amp(cuda, "fp32"), torch.autocast)
    with pytest.warns(UserWarning, match="CUDA is not available"):  # built only: no GPU here
        bf16 = amp(cuda, "bf16")
    assert isinstance(bf16, torch.autocast) and (bf16.device, bf16.fast_dtype) == ("cuda", torch.bfloat16)
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: bf16, fp32"):
        amp(cpu, "fp16")


def test_stopped_and_resumed_run_ends_identical(tiny_project, straight, tmp_path):
    train(tiny_project, tmp_path, stop_after=3)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 3
    assert len(read_log(tmp_path / "train_log.csv")) == 3
    with open(tmp_path / "train_log.csv", "a") as log:  # a row logged after the checkpoint, then a crash
        log.write("4,0.1,9,9,9,9,9,0.1\n")
    train(tiny_project, tmp_path)
    assert_same(load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt"))
    assert log_without_times(tmp_path) == log_without_times(straight)


def test_loader_workers_do_not_change_the_trained_weights(tiny_project, straight, tmp_path):
    """Why ``train.workers`` is left out of the config hash: samples are seeded by (seed, epoch, index)."""
    train(with_overrides(tiny_project, {"train.workers": 2}), tmp_path)
    assert_same(
        load_checkpoint(tmp_path / "checkpoint.pt")["model"], load_checkpoint(straight / "checkpoint.pt")["model"]
    )


def signal_at(monkeypatch, iteration: int, signum: int) -> None:
    """Send ``signum`` to this process while step ``iteration`` (0-based) runs."""
    real = loop.poly_lr

    def poly_lr_then_signal(base, it, total, power):
        if it == iteration:
            os.kill(os.getpid(), signum)
        return real(base, it, total, power)

    monkeypatch.setattr(loop, "poly_lr", poly_lr_then_signal)


def test_sigterm_checkpoints_at_the_iteration_boundary_then_resumes(tiny_project, straight, tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    signal_at(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(Interrupted) as stop:
        train(tiny_project, tmp_path)
    assert stop.value.code == 128 + signal.SIGTERM
    assert "SIGTERM received: stopped after iteration 3" in stop.value.message
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer's handler is gone again
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 3
    assert len(read_log(tmp_path / "train_log.csv")) == 3
    monkeypatch.undo()
    train(tiny_project, tmp_path)
    assert_same(load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt"))
    assert log_without_times(tmp_path) == log_without_times(straight)


def test_sigusr2_hands_over_to_submitits_handler_after_the_checkpoint(tiny_project, tmp_path, monkeypatch):
    calls = []

    def submitit_handler(signum, frame):  # submitit's: checkpoint(), requeue, sys.exit(-1)
        calls.append((signum, load_checkpoint(tmp_path / "checkpoint.pt")["iteration"]))
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        signal_at(monkeypatch, 1, signal.SIGUSR2)
        with pytest.raises(SystemExit) as stop:
            train(tiny_project, tmp_path)
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stop.value.code == -1 and calls == [(signal.SIGUSR2, 2)]


def test_a_checkpoint_of_another_config_is_refused(tiny_project, straight, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes((straight / "checkpoint.pt").read_bytes())
    with pytest.raises(DataError, match=r"checkpoint\.pt: checkpoint of another configuration"):
        train(with_overrides(tiny_project, {"seed": 3}), tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"checkpoint\.pt: not a readable checkpoint"):
        train(tiny_project, tmp_path)


@pytest.mark.parametrize(
    "head,terms",
    [
        ("fcn", {"ce", "aux", "sr"}),
        ("ppm", {"ce", "aux", "sr"}),
        ("aspp", {"ce", "aux", "sr"}),
        ("danet", {"ce", "aux", "sr"}),
        ("danet-reference", {"ce", "aux", "sr", "danet"}),
        ("ocr", {"ce", "aux", "coarse", "sr"}),
        ("grar", {"ce", "aux", "coarse", "sr"}),
    ],
)
def test_every_head_trains_and_logs_its_terms(tiny_project, tmp_path, head, terms):
    head, _, build = head.partition("-")
    overrides = {"model.head": head, "train.schedules.embedded.iterations": 2} | (
        {"model.danet": build} if build else {}
    )
    train(with_overrides(tiny_project, overrides), tmp_path)
    for row in read_log(tmp_path / "train_log.csv"):
        assert {k for k in ("ce", "aux", "coarse", "sr", "danet") if row[k] != ""} == terms
        assert np.isfinite(float(row["loss"]))


def test_run_cell_writes_the_run_folder(tiny_project, tmp_path, monkeypatch):
    run_dir = tmp_path / "cell"
    metrics = run_cell(tiny_project, run_dir)
    files = {p.name for p in run_dir.iterdir()}
    assert files == {
        ".grar-run",
        "config.yaml",
        "train_log.csv",
        "checkpoint.pt",
        "metrics.json",
        "confusion.npy",
        "confusion_ms.npy",
        "confusion_images.npz",
        "confusion_images_ms.npz",
    }
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    newest = max((run_dir / name).stat().st_mtime_ns for name in files)
    assert (run_dir / "metrics.json").stat().st_mtime_ns == newest  # written last
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == tiny_project.model_dump(mode="json")
    for scores in (metrics, metrics["ms"]):
        assert 0 <= scores["miou"] <= 1 and 0 <= scores["pixel_accuracy"] <= 1 and 0 <= scores["mean_accuracy"] <= 1
        assert list(scores["per_class_iou"])[:2] == ["bedroom.wall", "bedroom.floor"]
    assert metrics["iterations"] == 6 and metrics["train_seconds"] > 0 and metrics["eval_seconds"] > 0
    provenance = metrics["provenance"]
    assert provenance["config_hash"] == config_hash(tiny_project) and provenance["run_dir"] == str(run_dir)
    assert (provenance["head"], provenance["seed"], provenance["device"]) == ("grar", 0, "cpu")
    single, multi = np.load(run_dir / "confusion.npy"), np.load(run_dir / "confusion_ms.npy")
    assert single.shape == multi.shape == (24, 24) and single.dtype == np.int64
    assert single.sum() == multi.sum() == VAL_IMAGES * IMAGE_SIZE**2  # every val pixel is labelled
    assert metrics["pixel_accuracy"] == pytest.approx(np.trace(single) / single.sum())
    for name, matrix in (("confusion_images.npz", single), ("confusion_images_ms.npz", multi)):
        per_image = read_image_confusions(run_dir / name)
        assert per_image.num_images == VAL_IMAGES and np.array_equal(per_image.dense_total(), matrix)
        assert [per_image.image_matrix(i).sum() for i in range(VAL_IMAGES)] == [IMAGE_SIZE**2] * VAL_IMAGES

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(run_module, "train", no_training)
    assert run_cell(tiny_project, run_dir) == metrics
    with pytest.raises(DataError, match="finished run of another configuration"):
        run_cell(with_overrides(tiny_project, {"seed": 2}), run_dir)


def test_single_scale_only_without_multi_scale(tiny_project, tmp_path):
    params = with_overrides(tiny_project, {"eval.multi_scale": False, "train.schedules.embedded.iterations": 1})
    metrics = run_cell(params, tmp_path)
    assert metrics["ms"] is None and not (tmp_path / "confusion_ms.npy").exists()
    assert (tmp_path / "confusion_images.npz").is_file() and not (tmp_path / "confusion_images_ms.npz").exists()


def test_load_run_model_rebuilds_the_evaluated_model(tiny_project, tmp_path):
    params = with_overrides(tiny_project, {"eval.multi_scale": False, "stats.normalisation": "conditional"})
    run_cell(params, tmp_path)
    model, loaded = load_run_model(tmp_path)
    assert loaded == params and not model.training
    val = SegmentationDataset(dataset_dir(params, "embedded"), "val")
    evaluation = evaluate_model(model, val, params.eval, torch.device("cpu"), params.train.precision)
    assert np.array_equal(evaluation.single, np.load(tmp_path / "confusion.npy"))
    with pytest.raises(DataError, match="no checkpoint"):
        load_run_model(tmp_path / "missing")


def test_commit_is_unknown_without_git(monkeypatch):
    rundir.source_commit.cache_clear()
    commit = rundir.source_commit()
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40
    monkeypatch.setenv("PATH", "/nonexistent")
    rundir.source_commit.cache_clear()
    assert rundir.source_commit() == "unknown"
    rundir.source_commit.cache_clear()


def test_commit_is_dirty_for_source_changes_not_for_dvc_lock(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    commit = rundir.source_commit.__wrapped__
    assert commit(tmp_path) == head
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what `dvc repro` does as it goes
    assert commit(tmp_path) == head
    (tmp_path / "model.py").write_text("x = 2\n")
    assert commit(tmp_path) == head + "-dirty"


def test_grar_train_command(tiny_project, tmp_path, monkeypatch, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_project.model_dump(mode="json")))
    assert main(["train", "--params", str(params_file), "--iterations", "1", "--set", "eval.multi_scale=false"]) == 0
    expected = with_overrides(tiny_project, {"train.schedules.embedded.iterations": 1, "eval.multi_scale": False})
    run_dir = f"{tiny_project.grid.runs}/adhoc-{config_hash(expected)[:10]}"
    out = capsys.readouterr().out
    assert f"run folder: {run_dir}" in out and "mIoU" in out and "(1 iterations)" in out
    assert main(["train", "--params", str(params_file), "--iterations", "0"]) == 2
    assert "--iterations: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "Resuming: the checkpoint is written" in capsys.readouterr().out


def test_a_run_folder_another_process_trains_is_refused_or_waited_for(tiny_project, tmp_path, monkeypatch, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_project.model_dump(mode="json")))
    out = tmp_path / "run"
    holder = subprocess.Popen(["sleep", "60"])
    me = lock.Holder.me()
    out.mkdir()
    (out / "grar.lock.0").write_text(
        json.dumps({"host": me.host, "pidns": me.pidns, "pid": holder.pid, "job": "", "since": 0.0, "token": "other"})
    )
    argv = [
        "train",
        "--params",
        str(params_file),
        "--out",
        str(out),
        "--iterations",
        "1",
        "--set",
        "eval.multi_scale=false",
    ]
    try:
        assert main(argv) == 1
        assert capsys.readouterr().err == (
            f"grar: error: {out}: running elsewhere ({me.host}, pid {holder.pid}, since 1970-01-01 00:00:00 UTC)\n"
        )
        with pytest.raises(lock.Locked):
            run_cell(tiny_project, out)  # run_cell itself takes the lock
        assert sorted(path.name for path in out.iterdir()) == ["grar.lock.0"]  # nothing trained

        def holder_ends(_seconds: float) -> None:  # --wait polls: the holder ends during the first pause
            holder.kill()
            holder.wait()
            pauses.append(_seconds)

        pauses: list[float] = []
        monkeypatch.setattr(lock, "time", SimpleNamespace(time=time.time, sleep=holder_ends))
        assert main([*argv, "--wait"]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert pauses == [lock.POLL_S]
    assert "mIoU" in capsys.readouterr().out and (out / "metrics.json").is_file()
    assert not list(out.glob("grar.lock*"))  # released


def test_the_pretrained_backbone_is_loaded_and_not_needed_afterwards(tiny_project, tmp_path):
    body = build_model(tiny_project, 24).backbone.body.state_dict()
    weights = {key: value + 1 if value.is_floating_point() else value for key, value in body.items()}
    torch.save(weights, tmp_path / "backbone.pt")
    params = with_overrides(
        tiny_project,
        {
            "model.pretrained": str(tmp_path / "backbone.pt"),
            "train.schedules.embedded.iterations": 1,
            "eval.multi_scale": False,
        },
    )
    loaded = build_model(params, 24).backbone.body.state_dict()
    assert all(torch.equal(loaded[key], weights[key]) for key in weights)
    run_cell(params, tmp_path / "run")
    (tmp_path / "backbone.pt").unlink()
    model, _ = load_run_model(tmp_path / "run")  # the checkpoint holds the trained weights
    assert model.backbone.body.conv1.weight.shape == weights["conv1.weight"].shape


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_project, tmp_path, monkeypatch):
    forward = build.TrainingStep.forward
    calls = []

    def nan_at_the_fifth_step(self, images, target):
        terms = forward(self, images, target)
        calls.append(1)
        if len(calls) == 5:
            terms["sr"] = terms["sr"] * float("nan")
            terms["total"] = terms["total"] + terms["sr"]
        return terms

    monkeypatch.setattr(build.TrainingStep, "forward", nan_at_the_fifth_step)
    run_dir = tmp_path / "run"
    with pytest.raises(checkpoint.Diverged) as info:
        run_cell(tiny_project, run_dir)
    assert str(info.value) == (
        f"{run_dir}: training diverged at iteration 5: loss term sr is nan "
        f"(lr {poly_lr(0.02, 4, 6, 0.9):.4g}); checkpoint.pt of iteration 4 is kept, no metrics written; "
        "lower the learning rate or check the data, then train again"
    )
    assert load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 4
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(build.TrainingStep, "forward", forward)  # fixed: training again resumes at 4 and ends
    assert run_cell(tiny_project, run_dir)["iterations"] == 6


def test_non_finite_params_are_refused(tiny_project):
    from pipeline.errors import ConfigError

    for key in ("train.schedules.embedded.lr", "train.loss.sr", "train.weight_decay"):
        for value in (float("inf"), float("nan")):
            with pytest.raises(ConfigError, match=rf"{key}: input should be a finite number"):
                with_overrides(tiny_project, {key: value})


def test_a_checkpoint_of_another_config_is_refused_before_config_yaml_is_touched(tiny_project, tmp_path):
    run_dir = tmp_path / "run"
    run_cell(tiny_project, run_dir)
    (run_dir / "metrics.json").unlink()
    before = (run_dir / "config.yaml").read_bytes()
    with pytest.raises(DataError, match=r"checkpoint\.pt: checkpoint of another configuration"):
        run_cell(with_overrides(tiny_project, {"seed": 5}), run_dir)
    assert (run_dir / "config.yaml").read_bytes() == before


def test_a_folder_that_is_no_run_folder_is_refused(tiny_project, tmp_path):
    from pipeline.errors import ConfigError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my experiment notes\n")
    with pytest.raises(ConfigError, match=rf"run folder {mine}: exists, is not empty and was not written by grar"):
        run_cell(tiny_project, mine)
    assert [p.name for p in mine.iterdir()] == ["config.yaml"]
    assert (mine / "config.yaml").read_text() == "my experiment notes\n"


def test_a_checkpoint_from_before_the_later_keys_still_loads(tiny_project, tmp_path):
    run_dir = tmp_path / "old"
    run_cell(tiny_project, run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    for key in checkpoint.LATER_KEYS:  # as a checkpoint of an older grar: none of the keys added since
        *parents, last = key.split(".")
        node = state["params"]
        for part in parents:
            node = node[part]
        del node[last]
    for path in ADDED_KEYS:  # and none of the keys added with a default (train.precision, eval.fusion...)
        node = state["params"]
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    torch.save(state, run_dir / "checkpoint.pt")
    run = load_run(run_dir)
    assert (
        run.params.data.folders == {} and run.params.train.head_lr_mult == 1.0 and run.params.model.stem == "standard"
    )
    assert (run.params.train.precision, run.params.eval.fusion, run.params.eval.align_corners) == (
        "bf16",
        "softmax_mean",
        False,
    )


def test_a_trainer_that_lost_its_lock_stops_before_writing_anything_more(tiny_project, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    written: dict[str, bytes] = {}
    append = checkpoint.TrainLog.append

    def taken_over_after_iteration_3(log, iteration, *args):
        append(log, iteration, *args)
        if iteration == 3:  # this trainer froze past the heartbeat timeout and another process took the run
            other = lock.Holder("elsewhere", "", 1, "", 0.0, "other")
            assert lock.create_exclusive(run_dir / "grar.lock.1", json.dumps(dataclasses.asdict(other)) + "\n")
            written.update({p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()})

    monkeypatch.setattr(checkpoint.TrainLog, "append", taken_over_after_iteration_3)
    with pytest.raises(GrarError) as info:  # before: it trained on, over the other process's run
        run_cell(tiny_project, run_dir)
    assert type(info.value).__name__ == "LockLost" and str(info.value) == (
        f"{run_dir}: lost the lock {run_dir}/grar.lock.0 (no heartbeat for over 60 s: this process was frozen or "
        "cut off); now held by elsewhere, pid 1, since 1970-01-01 00:00:00 UTC; stopped without writing anything "
        "more there"
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == written  # not a byte since
    assert load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 2 and "metrics.json" not in written
    assert [row["iteration"] for row in read_log(run_dir / "train_log.csv")] == ["1", "2", "3"]


def test_the_run_identity_follows_the_data_as_it_is_now(tiny_project, tmp_path, monkeypatch, capsys):
    """An edited, added or removed prepared file is another run; the same data again (even with new times) is not."""
    monkeypatch.setattr(rundir, "LISTING_TTL_S", 0.0, raising=False)  # list the files at every call
    data = tmp_path / "data"
    shutil.copytree(dataset_dir(tiny_project, "embedded"), data / "embedded")  # times kept: the prepared listing
    params = with_overrides(tiny_project, {"data.root": str(data)})
    digest = config_hash(params)
    label = data / "embedded" / "train" / "labels" / sorted(os.listdir(data / "embedded" / "train" / "labels"))[0]
    original = label.read_bytes()
    values = np.array(Image.open(label))
    values[0, 0] = (int(values[0, 0]) + 1) % 3 if values[0, 0] != 255 else 0
    Image.fromarray(values, mode="L").save(label)  # edited in place after prepare (then `grar stats`...)
    edited = config_hash(params)
    assert edited != digest
    note = capsys.readouterr().err
    assert note.startswith(f"grar: note: {data / 'embedded'}: its files changed since `grar prepare` (content sha256 ")
    label.write_bytes(original)  # the prepared bytes again, with a new modification time
    assert config_hash(params) == digest
    stray = data / "embedded" / "train" / "notes.txt"
    stray.write_text("added\n")
    assert config_hash(params) not in (digest, edited)
    stray.unlink()
    assert config_hash(params) == digest
    cached = json.loads((data / ".grar-fingerprints" / "embedded.json").read_text())  # for the next processes
    assert sorted(cached) == ["listing_sha256", "sha256"] and cached["sha256"] not in (digest, edited)


@pytest.mark.parametrize("failure", ["OSError", "unexpected pos"])
def test_a_full_disk_at_a_checkpoint_is_one_line_keeps_the_last_and_resumes_identical(
    tiny_project, straight, tmp_path, monkeypatch, capsys, failure
):
    """Both ways torch.save fails on a full disk through a file object (measured on a full tmpfs): a large write's
    OSError, or a small write's that torch swallows and reports as "unexpected pos"."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_project.model_dump(mode="json")))
    run_dir = tmp_path / "run"
    argv = ["train", "--params", str(params_file), "--out", str(run_dir)]
    real_save, saves = torch.save, []

    def disk_full_at_the_second_checkpoint(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) < 2:
            return real_save(obj, f, *args, **kwargs)
        if isinstance(f, str | os.PathLike):  # torch's own writer, given a path, on a full disk (measured)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        f.write(b"PK\x03\x04")  # a file object: what fitted, then the OSError itself
        f.flush()
        if failure == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 222528 vs 222424")

    monkeypatch.setattr(torch, "save", disk_full_at_the_second_checkpoint)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=4096))
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert re.fullmatch(
        rf"grar: error: {run_dir}/checkpoint.pt: checkpoint not written: No space left on device \(it needs about "
        r"[0-9.]+ MB, 0.0 MB free there\); the checkpoint of iteration 2 is kept: free some space and run the same "
        r"command again to resume from it",
        err[0],
    )
    assert load_checkpoint(run_dir / "checkpoint.pt")["iteration"] == 2
    assert sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")) == []  # nothing half-written
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.undo()  # space freed: torch.save and the free space as they are
    assert main(argv) == 0
    assert_same(load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt"))
    assert log_without_times(run_dir) == log_without_times(straight)


FROZEN_TRAINER = """
import sys
from pathlib import Path
import yaml
from pipeline import lock
lock.STALE_S, lock.HEARTBEAT_S = 2.0, 0.2  # the 60 s / 10 s of a real lock, scaled down
from pipeline.config import validate
from pipeline.errors import run_guarded
from pipeline.training.run import run_cell
params = validate(yaml.safe_load(Path(sys.argv[1]).read_text()))
sys.exit(run_guarded(lambda: run_cell(params, Path(sys.argv[2])) and None, "grar"))
"""


def test_a_frozen_trainer_woken_after_another_took_its_run_over_writes_nothing(tiny_project, tmp_path, monkeypatch):
    """The issue's case: SIGSTOP a trainer past the heartbeat timeout, let another process take the run over and
    finish it, SIGCONT the first: it says it lost the lock and stops, the other's files untouched."""
    params_file = tmp_path / "params.yaml"
    long_run = with_overrides(tiny_project, {"train.schedules.embedded.iterations": 400, "eval.multi_scale": False})
    params_file.write_text(yaml.safe_dump(long_run.model_dump(mode="json")))
    run_dir = tmp_path / "run"
    trainer = subprocess.Popen(
        [sys.executable, "-c", FROZEN_TRAINER, str(params_file), str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "train_log.csv").is_file() or len(read_log(run_dir / "train_log.csv")) < 5:
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.communicate()
            time.sleep(0.05)
        trainer.send_signal(signal.SIGSTOP)  # frozen past the heartbeat timeout...
        monkeypatch.setattr(lock, "STALE_S", 2.0)
        with lock.run_lock(run_dir, wait=True):  # ...another process takes the run over and finishes it
            (run_dir / "metrics.json").write_text('{"finished": "by the other process"}\n')
            taken_over = {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.startswith("grar.lock")}
        trainer.send_signal(signal.SIGCONT)
        out, err = trainer.communicate(timeout=120)
    finally:
        trainer.kill()
    assert trainer.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("grar: error:")]
    assert len(lines) == 1 and f"{run_dir}: lost the lock {run_dir}/grar.lock.0" in lines[0], err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.startswith("grar.lock")} == taken_over
