"""The store folder's lock: one holder at a time, named by pid; freed when its process dies."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boltwatch.store_lock import LOCK_FILE, StoreInUseError, StoreLock
from ingest.store import StoreError

BOUND_S = 30.0


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    store = tmp_path / "data"
    with StoreLock(store) as first:
        assert first.held
        assert (store / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(StoreInUseError) as refused:
            StoreLock(store).acquire()
        assert refused.value.pid == os.getpid()
        assert (
            str(refused.value)
            == f"store {store} is in use by another boltwatch (pid {os.getpid()})"
        )
        assert isinstance(refused.value, StoreError)
        copy = pickle.loads(pickle.dumps(refused.value))
        assert str(copy) == str(refused.value)
    assert not first.held
    with StoreLock(store) as again:  # released: free for the next one
        assert again.held


def test_a_folder_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("a file")
    with pytest.raises(StoreError, match="exists and is not a folder") as refused:
        StoreLock(path).acquire()
    assert refused.value.path == path


def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    """No stale lock after ``kill -9``: the kernel drops an flock with its process."""
    store = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from boltwatch.store_lock import StoreLock
                lock = StoreLock({str(store)!r})
                lock.acquire()
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreInUseError) as refused:
            StoreLock(store).acquire()
        assert refused.value.pid == holder.pid
        holder.kill()
        holder.wait(BOUND_S)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(BOUND_S)
    with StoreLock(store) as mine:
        assert mine.held
        assert (store / LOCK_FILE).read_text() == f"{os.getpid()}\n"
