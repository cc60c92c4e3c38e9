"""Exceptions that the command line turns into one line and an exit code (no traceback).

They live here, free of heavy imports, so that ``jaxrec.cli`` can catch them without importing
JAX. Raised by :mod:`jaxrec.workdir` and :mod:`jaxrec.train.loop`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Interrupted", "StageMismatchError", "WorkdirBusyError"]


class StageMismatchError(ValueError):
    """A workdir holds results of a different config than the one requested."""


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir's lock."""


class Interrupted(Exception):
    """SIGINT during a training loop: a checkpoint was saved; rerunning the command resumes."""

    def __init__(self, step: int, workdir: Path):
        self.step, self.workdir = step, workdir
        super().__init__(f"interrupted at step {step}; rerun the same command to resume")
