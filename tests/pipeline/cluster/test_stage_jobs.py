"""Stage jobs without a cluster: placement params, digests, records, and collecting a recorded job.

SLURM's answers (``slurm_states``, ``jobs_named``) are stood in for here; the
real cluster runs ``test_stage_jobs_slurm``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from submitit.core.utils import cloudpickle_dump

from pipeline.cluster import stage_jobs
from pipeline.cluster.stage_jobs import StageJobFailed, StageRecord
from pipeline.config import load_params, with_overrides
from pipeline.errors import ClusterError, ConfigError

ROOT = Path(__file__).resolve().parents[3]
KEYS = ("bench",)


@pytest.fixture
def params(tmp_path):
    return with_overrides(
        load_params(ROOT / "params.yaml"),
        {
            "executor.log_dir": str(tmp_path / "logs"),
            "bench.out": str(tmp_path / "bench.json"),
            "executor.stages.bench.kind": "slurm",
        },
    )


def written(path: Path):
    def work(params) -> None:
        path.write_text("ok\n")

    return work


def test_local_runs_the_work_here_and_records_nothing(params, tmp_path):
    local = with_overrides(params, {"executor.stages.bench.kind": "local"})
    stage_jobs.run_stage(local, "bench", written(tmp_path / "bench.json"), outputs=[tmp_path / "bench.json"], keys=KEYS)
    assert (tmp_path / "bench.json").read_text() == "ok\n"
    assert not (tmp_path / "logs").exists()


def test_the_paper_profile_sends_bench_to_one_gpu_and_keeps_the_data_stages_here():
    paper = load_params(ROOT / "profiles" / "paper.yaml")
    assert [getattr(paper.executor.stages, s).kind for s in ("prepare", "stats", "bench")] == [
        "local",
        "local",
        "slurm",
    ]
    slurm = stage_jobs.stage_executor(paper, "bench").slurm
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.cpus_per_task, slurm.mem_gb, slurm.timeout_min) == (
        1,
        1,
        8,
        32,
        60,
    )
    assert (slurm.partition, slurm.array_parallelism) == (None, 8)  # not overridden: executor.slurm's
    cpu = load_params(
        ROOT / "profiles" / "paper.yaml",
        ("executor.stages.stats.kind=slurm", "executor.stages.stats.slurm.partition=cpu"),
    )
    slurm = stage_jobs.stage_executor(cpu, "stats").slurm
    assert (cpu.executor.stages.stats.kind, slurm.partition, slurm.gpus_per_node, slurm.timeout_min) == (
        "slurm",
        "cpu",
        4,
        1440,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "executor.stages.bench.slurm.array_parallelism=2",
            "unknown key executor.stages.bench.slurm.array_parallelism",
        ),
        ("executor.stages.bench.slurm.gpus_per_node=-1", "executor.stages.bench.slurm.gpus_per_node: must be >= 0"),
        ("executor.stages.stats.kind=debug", "executor.stages.stats.kind: unknown value 'debug'"),
    ],
)
def test_a_bad_placement_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(ROOT / "params.yaml", (override,))


def test_the_digest_follows_the_keys_the_stage_reads_only(params):
    digest = stage_jobs.params_digest(params, KEYS, None)
    assert stage_jobs.params_digest(with_overrides(params, {"grid.seeds": [3]}), KEYS, None) == digest
    assert stage_jobs.params_digest(with_overrides(params, {"bench.repeats": 9}), KEYS, None) != digest
    assert stage_jobs.params_digest(params, KEYS, "ade20k") != digest


def recorded(
    params,
    tmp_path,
    state: str,
    outcome: tuple | None,
    digest: str | None = None,
    job_id: str | None = "41",
    monkeypatch=None,
) -> StageRecord:
    """A record of job ``job_id`` (``state`` in SLURM, ``outcome`` in its result pickle) for the bench stage."""
    folder = tmp_path / "logs" / "stages" / "bench"
    folder.mkdir(parents=True)
    record = StageRecord(
        "bench",
        digest or stage_jobs.params_digest(params, KEYS, None),
        "grar-bench-0000abcd",
        job_id,
        str(folder / "41_0_log.err") if job_id else str(folder),
    )
    (tmp_path / "logs" / "stages" / "bench.json").write_text(record.text())
    if outcome is not None:
        cloudpickle_dump(outcome, folder / "41_0_result.pkl")
    monkeypatch.setattr(stage_jobs, "slurm_states", lambda ids: dict.fromkeys(ids, state))
    monkeypatch.setattr(stage_jobs, "submit_stage", lambda *args: pytest.fail("submitted again"))
    return record


def test_a_job_that_finished_while_nobody_waited_is_collected_not_resubmitted(params, tmp_path, monkeypatch, capsys):
    recorded(params, tmp_path, "PURGED", ("success", None), monkeypatch=monkeypatch)
    (tmp_path / "bench.json").write_text("{}\n")  # the job wrote it
    stage_jobs.run_stage(params, "bench", written(tmp_path / "never"), outputs=[tmp_path / "bench.json"], keys=KEYS)
    assert capsys.readouterr().err.splitlines() == [
        "stage bench: job 41 finished earlier: collecting it",
        "stage bench: job 41 done",
    ]


def test_a_job_killed_before_its_id_was_written_is_found_by_name(params, tmp_path, monkeypatch, capsys):
    recorded(params, tmp_path, "RUNNING", None, job_id=None, monkeypatch=monkeypatch)
    monkeypatch.setattr(stage_jobs, "jobs_named", lambda names: {"grar-bench-0000abcd": {0: "41"}})
    found = stage_jobs.find_job(params, "bench", stage_jobs.params_digest(params, KEYS, None))
    folder = tmp_path / "logs" / "stages" / "bench"
    assert (found.job_id, found.log) == ("41", str(folder / "41_0_log.err"))
    assert stage_jobs.read_record(tmp_path / "logs" / "stages" / "bench.json") == found
    assert capsys.readouterr().err == "stage bench: collecting job 41 (RUNNING), submitted earlier\n"


def test_a_failed_job_is_one_line_with_its_log_and_is_submitted_again(params, tmp_path, monkeypatch, capsys):
    record = recorded(
        params, tmp_path, "FAILED", ("error", "Traceback ...\nRuntimeError: no GPU\n"), monkeypatch=monkeypatch
    )
    assert stage_jobs.find_job(params, "bench", record.digest) is None
    assert capsys.readouterr().err == (
        f"stage bench: job 41 failed (RuntimeError: no GPU), log {record.log}; submitting again\n"
    )
    with pytest.raises(
        StageJobFailed,
        match=r"^stage bench: job 41 failed \(RuntimeError: no GPU\), log .*"
        r"41_0_log.err; the next run submits it again$",
    ):
        stage_jobs.collect(record, [], "FAILED")


def test_a_job_that_ended_without_a_result_names_its_state(params, tmp_path, monkeypatch):
    record = recorded(params, tmp_path, "TIMEOUT", None, monkeypatch=monkeypatch)
    assert stage_jobs.job_problem(record, "TIMEOUT") == f"job 41 ended TIMEOUT without a result, log {record.log}"


def test_a_succeeded_job_without_its_output_fails_naming_it(params, tmp_path, monkeypatch):
    record = recorded(params, tmp_path, "COMPLETED", ("success", None), monkeypatch=monkeypatch)
    with pytest.raises(
        StageJobFailed,
        match=r"succeeded but .*bench.json is missing \(are the outputs on a file "
        r"system the compute nodes share\?\)",
    ):
        stage_jobs.collect(record, [tmp_path / "bench.json"], "COMPLETED")


def test_a_running_job_of_other_params_is_an_error_naming_it(params, tmp_path, monkeypatch):
    recorded(params, tmp_path, "RUNNING", None, digest="0" * 64, monkeypatch=monkeypatch)
    with pytest.raises(
        ClusterError,
        match=r"stage bench: job 41 of other parameters still runs \(RUNNING\) and "
        r"would overwrite the outputs: wait for it to end or `scancel 41`",
    ):
        stage_jobs.find_job(params, "bench", stage_jobs.params_digest(params, KEYS, None))


def test_a_job_squeue_forgot_is_found_by_name_in_its_sbatch_script(params, tmp_path, monkeypatch):
    recorded(params, tmp_path, "PURGED", ("success", None), job_id=None, monkeypatch=monkeypatch)
    monkeypatch.setattr(stage_jobs, "jobs_named", lambda names: {})
    folder = tmp_path / "logs" / "stages" / "bench"
    (folder / "40_submission.sh").write_text("#!/bin/bash\n#SBATCH --job-name=grar-bench-00000000\n")
    (folder / "41_submission.sh").write_text("#!/bin/bash\n#SBATCH --job-name=grar-bench-0000abcd\n")
    found = stage_jobs.find_job(params, "bench", stage_jobs.params_digest(params, KEYS, None))
    assert (found.job_id, found.log) == ("41", str(folder / "41_0_log.err"))
    (folder / "41_submission.sh").unlink()
    (tmp_path / "logs" / "stages" / "bench.json").write_text(StageRecord("bench", found.digest, found.token).text())
    assert stage_jobs.find_job(params, "bench", found.digest) is None  # never submitted: submit


def test_a_succeeded_job_whose_output_is_gone_is_submitted_again(params, tmp_path, monkeypatch, capsys):
    record = recorded(params, tmp_path, "COMPLETED", ("success", None), monkeypatch=monkeypatch)
    assert stage_jobs.find_job(params, "bench", record.digest, [tmp_path / "bench.json"]) is None
    assert capsys.readouterr().err == (
        f"stage bench: job 41 succeeded earlier, but {tmp_path / 'bench.json'} is gone; submitting again\n"
    )
