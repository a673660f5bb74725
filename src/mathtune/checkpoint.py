"""The run-dir contract: where runs go, atomic checkpoints, finding the newest complete one, pruning, resuming.

A checkpoint is written into a hidden staging folder and renamed into place, so `checkpoint-N/` exists only once
complete: a kill at any moment leaves the previous complete state or the new one, never half a folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import staging_folder, write_lines
from .errors import UserError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STAGED = re.compile(r"^\.checkpoint-\d+\.(partial|deleting)$")
RUN = re.compile(r"^v(\d+)-\d{8}-\d{6}$")
STATE_FILE = "trainer_state.json"


def new_run_dir(output_dir: str | Path, model_name: str) -> Path:
    """output_dir/<model>/v<N>-<YYYYMMDD-HHMMSS>, N one past the highest run already there."""
    parent = Path(output_dir) / model_name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder '{parent}': {exc.strerror}") from None
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := RUN.match(p.name))]
    version = max(taken, default=-1) + 1
    while True:
        run = parent / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            version += 1


def check_output_dir(path: str | Path, flag: str = "--output_dir") -> None:
    """Fail in one line before the slow work when `path` cannot become a folder: it, or the nearest part of it that
    exists, is a file or is not writable. Nothing is created here."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} '{path}' is a file; pass a folder")
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None:  # only when the working folder itself is gone: the write will say so
        return
    if not existing.is_dir():
        raise UserError(f"{flag} '{path}': '{existing}' is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} '{path}': folder '{existing}' is not writable")


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def newest_run(output_dir: str | Path, model_name: str, accept: Callable[[Path], bool] | None = None) -> Path | None:
    """The newest run folder under output_dir/<model> that `accept` accepts (any, without it)."""
    parent = Path(output_dir) / model_name
    found = parent.glob("v*") if parent.is_dir() else []
    runs = sorted((int(m.group(1)), p) for p in found if (m := RUN.match(p.name)) and p.is_dir())
    return next((run for _, run in reversed(runs) if accept is None or accept(run)), None)


def find_resume_checkpoint(value: str) -> Path:
    """The checkpoint folder `value` names, refused in one line unless it is complete (`auto` is sft's own: it picks
    the run by its options)."""
    path = Path(value)
    if STAGED.match(path.name):
        raise UserError(f"--resume_from_checkpoint '{value}' is not a complete checkpoint folder: its save was cut "
                        "short; pass a checkpoint-N folder, or auto")
    if not path.is_dir() or not (path / STATE_FILE).is_file():
        raise UserError(
            f"--resume_from_checkpoint '{value}' is not a complete checkpoint folder ({STATE_FILE} missing)")
    return path


def save_checkpoint(run_dir: Path, step: int, write, save_total_limit: int | None) -> Path:
    """Call `write(folder)` on a staging folder, rename it to checkpoint-<step>, then prune old checkpoints.

    A staging folder left by a killed run (`.checkpoint-N.partial`) is never taken for a checkpoint and is removed
    here. Pruning keeps the newest `save_total_limit` complete checkpoints, so it never removes the one just written.
    """
    final = run_dir / f"checkpoint-{step}"
    staging = run_dir / f".checkpoint-{step}.partial"
    for leftover in run_dir.iterdir():  # one trainer per run dir: anything it staged before is from a dead process
        if STAGED.match(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
    with staging_folder(staging, f"cannot save checkpoint to '{final}'", "; earlier checkpoints are intact"):
        staging.mkdir()
        write(staging)
        if final.exists():  # a resumed run re-saving a step it saved before; earlier checkpoints cover a kill here
            _remove(final)
        os.replace(staging, final)
    if save_total_limit is not None:
        for old in checkpoints(run_dir)[:-save_total_limit]:
            if old != final:
                _remove(old)
    return final


def _remove(folder: Path) -> None:
    """Rename aside, then delete: a kill mid-delete leaves a hidden folder, never a half-deleted checkpoint-N/."""
    trash = folder.with_name(f".{folder.name}.deleting")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(folder, trash)
    except OSError:  # cannot rename: delete in place rather than stop training over an old checkpoint
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


def discard_checkpoints_after(run_dir: Path, step: int) -> list[Path]:
    """Remove checkpoints newer than `step`: resuming from an older checkpoint abandons them (as it drops their log
    lines), and `auto` must never come back to them after a later crash."""
    newer = [p for p in checkpoints(run_dir) if int(CHECKPOINT.match(p.name).group(1)) > step]
    for folder in newer:
        _remove(folder)
    return newer


class RunLog:
    """logging.jsonl: one JSON line per log event, flushed at once; on resume, lines past the checkpoint go."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step(line, resume_step)]
            write_lines(path, kept)

    def write(self, record: dict) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as exc:
            raise UserError(
                f"cannot write '{self.path}': {exc.strerror or exc}; earlier checkpoints are intact") from None


def _step(line: str, resume_step: int) -> bool:
    """Whether a log line belongs to the steps up to `resume_step`; a line cut short by a kill never does."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("step", 0) <= resume_step
