"""A cooperative stop request shared by the processes of one command.

Worker processes (parallel folds, tuning workers) ignore SIGINT: a signal arriving while a
worker waits for work, or in the middle of an atomic write's clean-up, would kill it or
leave a temp file. Instead the parent, which gets Ctrl-C (or SIGTERM), sets one shared
event, and the training and prediction loops poll it between batches with
:func:`check`, which raises ``KeyboardInterrupt`` at that safe point. A fold stopped this
way writes nothing but its last epoch checkpoint; the same run resumes it.
"""

from __future__ import annotations

import signal
from typing import Protocol


class StopEvent(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...


_event: StopEvent | None = None


def watch(event: StopEvent, ignore_sigint: bool = True) -> None:
    """Make :func:`check` in this process follow ``event`` (a ``multiprocessing`` Event the
    parent sets on Ctrl-C); a worker process also stops taking SIGINT itself."""
    global _event
    _event = event
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def requested() -> bool:
    """Whether the parent asked this process to stop."""
    return _event is not None and _event.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a stop was requested (a no-op outside workers: there
    Ctrl-C raises by itself)."""
    if requested():
        raise KeyboardInterrupt("stop requested by the parent process")


class FoldsInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the folds; the message says which folds finished."""


def summary(experiment: str, finished: list[int], unfinished: list[int]) -> str:
    """One line for the user: what was kept and what a re-run will do."""
    kept = ", ".join(map(str, finished)) or "none"
    left = ", ".join(map(str, unfinished)) or "none"
    return (
        f"interrupted: {experiment} folds finished and kept: {kept}; not finished: {left} "
        "(a re-run trains them, resuming from their last epoch checkpoint)"
    )
