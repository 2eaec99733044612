"""Locks on shared storage: taking over dead and silent holders, never live ones, racing takeovers, nesting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import lock
from pipeline.errors import GrarError

ROOT = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def write_lock(path: Path, holder: lock.Holder, age_s: float = 0.0) -> None:
    """A lock file of ``holder`` whose heartbeat is ``age_s`` seconds old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(holder)))
    beat = time.time() - age_s
    os.utime(path, (beat, beat))


def holder(**changes) -> lock.Holder:
    """A holder on this host, in this PID namespace, outside SLURM, started at the epoch."""
    return replace(lock.Holder.me(), **{"job": "", "since": 0.0, "token": "t0", **changes})


@pytest.fixture
def outside_slurm(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_FOLDER", "RANK"):
        monkeypatch.delenv(name, raising=False)


def test_a_lock_is_a_generation_file_removed_on_release(tmp_path, outside_slurm):
    prefix = tmp_path / "run" / "grar.lock"
    with lock.acquire(prefix, "run") as held:
        assert held.path == tmp_path / "run" / "grar.lock.0"
        written = json.loads(held.path.read_text())
        assert (written["pid"], written["host"], written["token"]) == (os.getpid(), held.holder.host, held.holder.token)
        assert lock.live_holder(prefix) == held.holder
        with lock.acquire(prefix, "run") as nested:  # the same thread: nested, the same lock
            assert nested is held
        assert held.held()
        refused = []
        thread = threading.Thread(target=lambda: refused.append(try_in_thread(prefix)))
        thread.start()
        thread.join()
        assert refused == [f"run: running elsewhere ({held.holder.describe()})"]  # another thread is refused
    assert sorted(os.listdir(tmp_path / "run")) == []
    assert lock.live_holder(prefix) is None


def try_in_thread(prefix: Path) -> str:
    try:
        with lock.acquire(prefix, "run"):
            return "taken"
    except lock.Locked as err:
        return str(err)


def test_a_lock_whose_holder_died_on_this_host_is_taken_over(tmp_path, outside_slurm):
    prefix = tmp_path / "grar.lock"
    write_lock(tmp_path / "grar.lock.0", holder(pid=dead_pid()))
    assert lock.live_holder(prefix) is None
    with lock.acquire(prefix, "run") as held:
        assert held.path.name == "grar.lock.1"  # the next generation; the dead one is removed
        assert sorted(os.listdir(tmp_path)) == ["grar.lock.1"]


def test_a_live_holder_keeps_its_lock_and_is_named(tmp_path, outside_slurm):
    prefix = tmp_path / "grar.lock"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_lock(tmp_path / "grar.lock.3", holder(pid=sleeper.pid))
        with pytest.raises(lock.Locked) as caught:
            with lock.acquire(prefix, "runs/fcn-s0"):
                pass
        host = lock.Holder.me().host
        assert (
            str(caught.value) == f"runs/fcn-s0: running elsewhere ({host}, pid {sleeper.pid}, "
            "since 1970-01-01 00:00:00 UTC)"
        )
        assert caught.value.exit_code == 1
        assert sorted(os.listdir(tmp_path)) == ["grar.lock.3"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_waiting_for_a_live_holder_gives_up_after_the_timeout(tmp_path, outside_slurm, monkeypatch):
    write_lock(tmp_path / "grar.lock.0", holder(host="node-17", pid=1))
    pauses = []
    monkeypatch.setattr(
        lock,
        "time",
        SimpleNamespace(time=time.time, sleep=pauses.append, monotonic=iter([0.0, 0.5, 1.0, 1.5]).__next__),
    )
    with pytest.raises(lock.Locked, match=r"^run: running elsewhere \(node-17, pid 1, since 1970"):
        with lock.acquire(tmp_path / "grar.lock", "run", wait=True, poll_s=0.5, timeout_s=1.0):
            pass
    assert pauses == [0.5]  # busy at 0.5 s: one pause; busy again at 1.0 s, the deadline: gave up


def test_a_holder_elsewhere_is_stale_only_once_its_heartbeat_is_older_than_the_timeout(tmp_path, outside_slurm):
    prefix = tmp_path / "grar.lock"
    elsewhere = holder(host="node-17", pid=1, job="88_1")
    write_lock(tmp_path / "grar.lock.0", elsewhere, age_s=lock.STALE_S - 10)
    with pytest.raises(lock.Locked, match=r"running elsewhere \(node-17, pid 1, SLURM job 88_1, since 1970"):
        with lock.acquire(prefix, "run"):
            pass
    write_lock(tmp_path / "grar.lock.0", elsewhere, age_s=lock.STALE_S + 10)
    with lock.acquire(prefix, "run") as held:
        assert held.path.name == "grar.lock.1"


def test_an_earlier_start_of_the_same_slurm_job_is_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "88")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    earlier = holder(host="node-17", pid=1, job="88_1")
    assert lock.stale(earlier, time.time())
    assert not lock.stale(replace(earlier, job="88_2"), time.time())


def test_the_heartbeat_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path, outside_slurm, monkeypatch, capsys):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.02)
    with lock.acquire(tmp_path / "grar.lock", "run") as held:
        old = time.time() - 1000
        os.utime(held.path, (old, old))
        deadline = time.monotonic() + 30
        while held.path.stat().st_mtime == old:
            assert time.monotonic() < deadline, "the heartbeat never touched the lock"
            time.sleep(0.01)
        taker = held.path.with_name("grar.lock.1")
        write_lock(taker, holder(host="node-17", token="other"))  # taken over while we were frozen
        while not held.lost:
            assert time.monotonic() < deadline, "the heartbeat never noticed"
            time.sleep(0.01)
    assert capsys.readouterr().err.startswith(f"grar: warning: lost the lock {held.path}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grar.lock.0", "grar.lock.1"]  # neither removed
    assert json.loads(taker.read_text())["token"] == "other"


def test_a_file_that_is_not_a_lock_is_an_error_naming_it(tmp_path, outside_slurm):
    (tmp_path / "grar.lock.0").write_text("hello")
    with pytest.raises(GrarError, match=r"grar.lock.0: not a grar lock file .*remove it if no grar process"):
        with lock.acquire(tmp_path / "grar.lock", "run"):
            pass


RACER = """
import sys, time
from pathlib import Path
from pipeline import lock
folder = Path(sys.argv[1])
while not (folder / "go").exists():
    time.sleep(0.001)
try:
    with lock.acquire(folder / "grar.lock", "run") as held:
        (folder / f"result.{sys.argv[2]}").write_text("won " + held.path.name)
        while not (folder / "stop").exists():
            time.sleep(0.01)
except lock.Locked as err:
    (folder / f"result.{sys.argv[2]}").write_text(f"lost {err.holder.pid}")
"""


@pytest.mark.parametrize("start", ["free", "stale"])
def test_processes_racing_for_a_free_or_stale_lock_get_one_winner(tmp_path, outside_slurm, start):
    if start == "stale":
        write_lock(tmp_path / "grar.lock.0", holder(pid=dead_pid()))
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(i)], cwd=ROOT) for i in range(4)]
    try:
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("result.*"))) < 4:
            assert time.monotonic() < deadline, "the racers did not all answer"
            time.sleep(0.01)
    finally:
        (tmp_path / "stop").touch()
        codes = [racer.wait(timeout=60) for racer in racers]
    results = sorted((tmp_path / f"result.{i}").read_text() for i in range(4))
    winner = [
        racer.pid
        for i, racer in enumerate(racers)
        if results and (tmp_path / f"result.{i}").read_text().startswith("won")
    ]
    expected = "grar.lock.1" if start == "stale" else "grar.lock.0"
    assert codes == [0] * 4
    assert results == [f"lost {winner[0]}"] * 3 + [f"won {expected}"]
    assert sorted(path.name for path in tmp_path.glob("grar.lock*")) == []
