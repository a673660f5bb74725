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
from pathlib import Path

from .errors import UserError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
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


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def find_resume_checkpoint(value: str, output_dir: str | Path, model_name: str) -> Path:
    """`auto`: the newest complete checkpoint of the newest run that has one; otherwise the given checkpoint."""
    if value == "auto":
        parent = Path(output_dir) / model_name
        runs = sorted((int(m.group(1)), p) for p in parent.glob("v*") if (m := RUN.match(p.name))) if parent.is_dir() else []
        for _, run in reversed(runs):
            if (found := latest_checkpoint(run)) is not None:
                return found
        raise UserError(f"--resume_from_checkpoint auto: no complete checkpoint under '{parent}'")
    path = Path(value)
    if not path.is_dir() or not (path / STATE_FILE).is_file():
        raise UserError(f"--resume_from_checkpoint '{value}' is not a complete checkpoint folder ({STATE_FILE} missing)")
    return path


def save_checkpoint(run_dir: Path, step: int, write, save_total_limit: int | None) -> Path:
    """Call `write(folder)` on a staging folder, rename it to checkpoint-<step>, then prune old checkpoints."""
    final = run_dir / f"checkpoint-{step}"
    staging = run_dir / f".checkpoint-{step}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        write(staging)
        if final.exists():  # a resumed run re-saving a step it had saved before the crash
            shutil.rmtree(final)
        os.replace(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot save checkpoint to '{final}': {exc.strerror or exc}; earlier checkpoints are intact") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if save_total_limit is not None:
        for old in checkpoints(run_dir)[:-save_total_limit]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


class RunLog:
    """logging.jsonl: one JSON line per log event, flushed at once; on resume, lines past the checkpoint go."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= resume_step]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
