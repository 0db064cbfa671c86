"""One writer per run: an advisory lock file per experiment, fold or stack folder.

The lock is ``fcntl.flock`` on ``<folder>/.<name>.lock``: the kernel releases it when its
process ends however it ends (Ctrl-C, a crash, ``kill -9``), so a lock left by a dead process
is never in the way, with no guessing from pids. The holder writes its pid, host, start time
and command line into the file, so a second process that finds the lock taken fails at once
with an error naming them. The file itself stays (removing it would let two processes
lock two different files of one name).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType


class RunLockedError(RuntimeError):
    """Another live process holds the lock."""


class RunLock:
    """``with RunLock(folder, "train"):`` holds ``folder/.train.lock`` for the block."""

    def __init__(self, folder: Path, name: str, what: str | None = None) -> None:
        self.path = Path(folder) / f".{name}.lock"
        self.what = what or str(folder)
        self._handle: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise OSError(error.errno, f"cannot create the lock file ({error.strerror})",
                          str(self.path)) from error  # fmt: skip
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            os.close(handle)
            raise RunLockedError(
                f"{self.what} is in use by {holder} (lock {self.path}); wait for it to finish "
                "or stop it: a lock whose process has ended is released by itself"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(_holder()).encode() + b"\n", 0)
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def _read_holder(handle: int) -> str:
    """The holder as one phrase, from the lock file (which the holder wrote)."""
    try:
        holder = json.loads(os.pread(handle, 4096, 0).decode())
        return (
            f"pid {holder['pid']} on {holder['host']} since {holder['started']} "
            f"({holder['command']})"
        )
    except (ValueError, KeyError, OSError):
        return "another process"
