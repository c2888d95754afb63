"""One writer per directory (fastxlt.utils.locks): refusal naming the holder, blocking waits, a killed
holder never blocking, the no-flock fallback's stale-pid rule, and the wiring into `fastxlt run` and
`fastxlt-eval` with real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastxlt.errors import FastXLTError, RunLockedError
from fastxlt.utils.run_layout import arm_phase_dir
from fastxlt.utils import locks
from fastxlt.utils.locks import LOCK_FILENAME, DirectoryLock

REPO = Path(__file__).resolve().parents[1]

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from fastxlt.utils.locks import DirectoryLock
    lock = DirectoryLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    print("released", flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def start_holder(directory: Path, hold: float, linger: float = 0.0) -> subprocess.Popen:
    """A separate process that takes the lock, holds it ``hold`` seconds, releases it and lingers."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(directory), str(hold), str(linger)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline().strip() == "locked", process.stderr.read()
    return process


def test_second_holder_is_refused_with_the_holders_identity(tmp_path):
    holder = start_holder(tmp_path / "run", hold=60)
    try:
        with pytest.raises(RunLockedError) as refused:
            DirectoryLock(tmp_path / "run", fix="use another run_dir").acquire()
        message = str(refused.value)
        assert "\n" not in message and isinstance(refused.value, FastXLTError)
        assert message.startswith(f"run directory '{tmp_path / 'run'}' is in use by pid {holder.pid} on host {socket.gethostname()} since ")
        assert message.endswith("; wait for it to finish or use another run_dir")
    finally:
        holder.kill()
        holder.wait()


def test_same_process_cannot_take_the_lock_twice_and_release_frees_it(tmp_path):
    first = DirectoryLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    first.release()
    first.release()  # idempotent
    assert (tmp_path / LOCK_FILENAME).read_text() == ""  # a clean release leaves an empty record
    with DirectoryLock(tmp_path) as again:
        assert again.held
        record = json.loads((tmp_path / LOCK_FILENAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not again.held


def test_blocking_acquire_waits_for_the_holder_then_proceeds(tmp_path, capfd):
    holder = start_holder(tmp_path, hold=1.5, linger=30)
    try:
        started = time.monotonic()
        with DirectoryLock(tmp_path, what="phase", blocking=True, timeout=60, poll_interval=0.05):
            waited = time.monotonic() - started
            assert holder.stdout.readline().strip() == "released"  # the holder let go before we got in
        assert 0.8 < waited < 30
        assert f"waiting for phase '{tmp_path}', in use by pid {holder.pid}" in capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_blocking_acquire_gives_up_after_its_timeout(tmp_path):
    holder = start_holder(tmp_path, hold=60)
    try:
        started = time.monotonic()
        with pytest.raises(RunLockedError, match=r"in use by pid \d+ .*\(waited 0.5s\)"):
            DirectoryLock(tmp_path).acquire(blocking=True, timeout=0.5)
        assert 0.4 < time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_a_sigkilled_holder_does_not_block_and_is_reported_stale(tmp_path, capfd):
    holder = start_holder(tmp_path, hold=60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with DirectoryLock(tmp_path):
        pass
    err = capfd.readouterr().err
    assert f"pid {holder.pid}" in err and "ended without releasing it" in err


def test_without_flock_a_dead_pid_on_this_host_is_stale_and_a_live_one_blocks(tmp_path, monkeypatch, capfd):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    record = {"pid": dead_pid, "host": socket.gethostname(), "since": "earlier"}
    (tmp_path / locks.FALLBACK_FILENAME).write_text(json.dumps(record))
    lock = DirectoryLock(tmp_path).acquire()
    assert f"pid {dead_pid}" in capfd.readouterr().err
    assert json.loads((tmp_path / locks.FALLBACK_FILENAME).read_text())["pid"] == os.getpid()
    with pytest.raises(RunLockedError, match=f"in use by pid {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()  # a live holder (this process) is not stale
    lock.release()
    assert not (tmp_path / locks.FALLBACK_FILENAME).exists()
    # a holder on another host cannot be checked: never taken over
    (tmp_path / locks.FALLBACK_FILENAME).write_text(json.dumps({**record, "host": "elsewhere"}))
    with pytest.raises(RunLockedError, match="on host elsewhere"):
        DirectoryLock(tmp_path).acquire()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_keep_the_umask_like_open(tmp_path, umask):
    """Results written atomically get the mode a plain open() gives (mkstemp alone would make them 0600)."""
    from fastxlt.utils.io import write_json_atomic, write_text_atomic

    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "results.json", {"score": 1.0})
        write_text_atomic(tmp_path / "config.yaml", "seed: 1\n")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == expected
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == expected


# ------------------------------------------------------------------- wiring: fastxlt run, fastxlt-eval


SECOND_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import fastxlt.cli, fastxlt.experiments.pipeline, deepspeed  # the slow imports, done before the race starts
    print("ready", flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.05)
    sys.exit(fastxlt.cli.main(["run", "--config", sys.argv[2]]))
    """
)


def test_second_fastxlt_run_on_one_run_dir_is_refused_and_the_first_finishes(tmp_path, synthetic_model):
    from test_training import write_config

    run_dir = tmp_path / "run"
    config = write_config(tmp_path, synthetic_model, run_dir, optimization__max_steps=40, optimization__eval_every=40,
                          optimization__checkpoint_every=40)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    # the second `fastxlt run` has imported everything before the first starts, so it asks for the lock at once
    second = subprocess.Popen([sys.executable, "-c", SECOND_RUN, str(go), str(config)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    try:
        assert second.stdout.readline().strip() == "ready", second.stderr.read()
        first = subprocess.Popen([sys.executable, "-m", "fastxlt.cli", "run", "--config", str(config)], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (run_dir / LOCK_FILENAME).is_file() or not (run_dir / LOCK_FILENAME).read_text():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        go.touch()
        _, second_err = second.communicate(timeout=120)
        assert first.poll() is None, "the first run ended before the second asked: the test proved nothing"
        assert second.returncode == 2, second_err[-2000:]
        last = second_err.strip().splitlines()[-1]
        assert last.startswith(f"fastxlt: error: run directory '{run_dir}' is in use by pid {first.pid} on host ")
        assert last.endswith("; wait for it to finish or use another run_dir")
        _, first_err = first.communicate(timeout=600)
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
    assert first.returncode == 0, first_err[-3000:]
    summary = json.loads((arm_phase_dir(run_dir, "target") / "phase.json").read_text())
    assert summary["optimizer_steps"] == 40 and (arm_phase_dir(run_dir, "target") / "model" / "heads.pt").is_file()


def test_fastxlt_eval_refuses_an_output_directory_in_use(tmp_path, tiny_run):
    from test_training import run_cli

    out = tmp_path / "eval-out"
    with DirectoryLock(out, what="evaluation output directory"):
        result = run_cli("-m", "fastxlt.cli", "eval", "--model", str(tiny_run), "--task", "synth-para",
                         "--languages", "en", "--output", str(out), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fastxlt: error: evaluation output directory '{out}' is in use by pid {os.getpid()} on host ")
    assert last.endswith("; wait for it to finish or use another --output")
    assert not (out / "results.json").exists()
