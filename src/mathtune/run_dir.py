"""A run folder owns its run's state: where runs go, which run a resume continues (and whether its options allow
it), one writer at a time, the log, atomic checkpoints of weights and training state, pruning.

A checkpoint is written into a hidden staging folder and renamed into place, so `checkpoint-N/` exists only once
complete: a kill at any moment leaves the previous complete state or the new one, never half a folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

from .atomic import follow_umask, staging_folder, write_json, write_lines
from .config import SECTIONS, RunConfig
from .errors import UserError, first_line
from .train import TrainState

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
    with staging_folder(staging, f"cannot save checkpoint to '{final}'", _intact(run_dir)):
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
    """logging.jsonl: one JSON line per log event, whole or absent; on resume, lines past the checkpoint go."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step(line, resume_step)]
            write_lines(path, kept)

    def write(self, record: dict) -> None:
        # One os.write of the whole line, cut back to the old size if it fails: a full disk must not leave half a
        # line that `plot` would then reject.
        data = (json.dumps(record) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot write '{self.path}': {exc.strerror or exc}{_intact(self.path.parent)}") from None
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, "No space left on device")  # a short write: the disk filled up mid-line
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise UserError(
                    f"cannot write '{self.path}': {exc.strerror or exc}{_intact(self.path.parent)}") from None
        finally:
            os.close(fd)


def _intact(run_dir: Path) -> str:
    """The end of a failed write's message: true about what is saved."""
    try:
        saved = checkpoints(run_dir)
    except OSError:
        return ""
    return "; earlier checkpoints are intact" if saved else "; no checkpoint was saved yet"


def _step(line: str, resume_step: int) -> bool:
    """Whether a log line belongs to the steps up to `resume_step`; a line cut short by a kill never does."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("step", 0) <= resume_step


# -- resume: which run, and whether its options allow it ---------------------------------------------------------------

def may_change_on_resume() -> set[str]:
    """Options a resumed run may change: those whose field metadata says so (config.MAY_CHANGE_ON_RESUME)."""
    return {f.name for cls in SECTIONS.values() for f in fields(cls) if f.metadata.get("resume") == "may_change"}


def _flat(sections: dict) -> dict:
    """{option: value} over every section; option names are unique across sections, so an args.json written with
    the older sections (model/lora/data/train) compares with today's (model/lora/data/optim/run/fast)."""
    return {k: v for section in sections.values() if isinstance(section, dict) for k, v in section.items()}


def differences(saved: dict, cfg: RunConfig) -> list[str]:
    """'option: before -> now' for each option that differs between a run's args.json and `cfg`."""
    now = json.loads(cfg.to_json())
    extra = getattr(cfg, "extra_sections", {})  # a config's own sections beyond sft's (rl.config.GrpoConfig: grpo)
    old_values = _flat({k: v for k, v in saved.items() if k in ("model", "lora", "data", "train", *SECTIONS, *extra)})
    new_values = _flat({k: now[k] for k in (*SECTIONS, *extra)})
    allowed = may_change_on_resume() | {f.name for cls in extra.values() for f in fields(cls)
                                        if f.metadata.get("resume") == "may_change"}
    found = []
    for key, value in new_values.items():
        old = old_values.get(key, value)
        if key in allowed or _same(key, old, value):
            continue
        found.append(f"{key}: {old!r} -> {value!r}")
    return found


def _same(key: str, old, new) -> bool:
    if key == "model_id_or_path":
        return _same_path(old, new)
    if key == "dataset" and isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(_same_path(a[0], b[0]) and a[1] == b[1] for a, b in zip(map(_split_spec, old),
                                                                           map(_split_spec, new), strict=True))
    return old == new


def _split_spec(spec: str) -> tuple[str, str]:
    """'SRC#N' -> (SRC, N); 'SRC' -> (SRC, '')."""
    head, sep, tail = spec.rpartition("#")
    return (head, tail) if sep else (spec, "")


def _same_path(a, b) -> bool:
    """Equal, or two spellings of one local path."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False


def saved_args(run_dir: Path) -> dict | None:
    """A run's args.json, or None where it is missing or unreadable."""
    try:
        saved = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) else None


def resume_point(cfg: RunConfig, name: str) -> tuple[Path | None, Path | None]:
    """(checkpoint to resume from, its run folder); (None, run) to restart a run killed before its first checkpoint;
    (None, None) for a new run. `auto` takes the newest run started with the same options; a checkpoint given by
    path must come from such a run."""
    value = cfg.run.resume_from_checkpoint
    if not value:
        return None, None
    if value == "auto":
        run = newest_run(cfg.run.output_dir, name,
                         accept=lambda r: (saved := saved_args(r)) is not None and not differences(saved, cfg))
        if run is None:
            print(f"--resume_from_checkpoint auto: no run with these options under "
                  f"'{Path(cfg.run.output_dir) / name}' yet; starting a new run", flush=True)
            return None, None
        found = latest_checkpoint(run)
        if found is None:
            print(f"--resume_from_checkpoint auto: '{run}' has no complete checkpoint yet; restarting it from the "
                  "beginning", flush=True)
        return found, run
    found = find_resume_checkpoint(value)
    saved = saved_args(found.parent)
    if saved is None:
        raise UserError(f"--resume_from_checkpoint '{value}': its run folder has no readable args.json")
    if changed := differences(saved, cfg):
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise UserError(f"--resume_from_checkpoint '{value}': the run was started with other options, "
                        f"{changed[0]}{more}; pass the same options to resume it, or start a new run")
    return found, found.parent


def base_model_of(adapter: Path) -> str | None:
    """The base model an adapter checkpoint was trained on: the run's args.json first, then peft's record."""
    for file, keys in ((adapter.parent / "args.json", ("model", "model_id_or_path")),
                       (adapter / "adapter_config.json", ("base_model_name_or_path",))):
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
            for key in keys:
                value = value[key]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
            raise UserError(f"'{file}' is not valid JSON; cannot tell the base model of adapter '{adapter}'") from None
        except KeyError:
            continue
        if value is None:  # args.json's None is "the embedded default": peft's record names its folder
            continue
        if not isinstance(value, str):
            raise UserError(f"'{file}': the base model recorded for adapter '{adapter}' is {value!r}, not a name or "
                            "path")
        return value
    return None


# -- training state in a checkpoint ------------------------------------------------------------------------------------

def save_state(folder: Path, state: TrainState) -> None:
    """Optimizer, scheduler and RNG as .pt files of plain data, the position as trainer_state.json (written last: a
    checkpoint counts as complete once it is there)."""
    _save_torch(state.optimizer, folder / "optimizer.pt")
    _save_torch(state.scheduler, folder / "scheduler.pt")
    _save_torch(state.rng, folder / "rng_state.pt")
    (folder / STATE_FILE).write_text(json.dumps(
        {"global_step": state.step, "epoch": state.epoch, "position": state.position, "total_steps": state.total_steps,
         "steps_per_epoch": state.steps_per_epoch, "window": state.window}, indent=2))


def load_state(checkpoint: Path) -> TrainState:
    """The training state saved in `checkpoint` (the optimizer, scheduler and RNG are applied by the loop)."""
    try:
        saved = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        position = (saved["global_step"], saved["epoch"], saved["position"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"'{checkpoint / STATE_FILE}' is unreadable or incomplete ({type(exc).__name__})") from None
    if not all(isinstance(v, int) and v >= 0 for v in position):
        raise UserError(f"'{checkpoint / STATE_FILE}': global_step, epoch and position must be whole numbers")
    optimizer = _load_torch(checkpoint / "optimizer.pt")
    scheduler = _load_torch(checkpoint / "scheduler.pt")
    rng = _load_torch(checkpoint / "rng_state.pt")
    window = saved.get("window", {})
    return TrainState(*position, window=dict(window) if isinstance(window, dict) else {},
                      total_steps=saved.get("total_steps", 0), steps_per_epoch=saved.get("steps_per_epoch", 0),
                      optimizer=optimizer, scheduler=scheduler, rng=rng, source=str(checkpoint))


def _save_torch(obj, path: Path) -> None:
    # Through a Python file so that a failed write (disk full) keeps its OSError as the context of torch's error.
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def _load_torch(path: Path):
    """torch.load of a state file written by _save_torch, refusing anything but tensors and plain containers."""
    import pickle

    import torch

    if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 6):
        # Before 2.6, weights_only=True could still be made to run code (CVE-2025-32434).
        raise UserError(f"resuming needs torch>=2.6 to read '{path}' safely; found torch {torch.__version__}")
    if not path.is_file():
        raise UserError(f"checkpoint file '{path}' is missing")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise UserError(f"refusing '{path}': it holds Python objects beyond tensors and plain data, which could run "
                        "code when loaded; mathtune writes no such file") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"cannot read '{path}': {first_line(exc, 160)}") from None


def lock_folder(path: Path, what: str) -> int:
    """An exclusive lock on folder `path` for this process, as an open descriptor (closing it lets go). The kernel
    drops the lock when the process ends however it ends, so a killed writer never leaves a stale lock behind; a
    live second writer is refused in one line naming `what` ("run folder", "--output_dir")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"cannot open {what} '{path}': {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UserError(f"{what} '{path}' is in use by another mathtune process; wait for it to end or "
                        "stop it first") from None
    return fd


def _loaded_folder(model) -> Path | None:
    """The local folder the adapted model was loaded from (peft records it), when there is one."""
    configs = getattr(model, "peft_config", None) or {}
    for config in configs.values():
        name = getattr(config, "base_model_name_or_path", None)
        if isinstance(name, str) and Path(name).is_dir():
            return Path(name)
    return None


def _base_folder(typed: str | None) -> Path | None:
    """The local folder of the base model as typed (the embedded one for none), None for a hub id. Not through
    model.resolve_model_path: model reads run_dir, so run_dir does not import it."""
    if typed is None or typed in ("", "default", "embedded"):
        from .embedded import embedded_model_dir

        return embedded_model_dir()
    path = Path(typed).expanduser()
    return path if path.is_dir() else None


# -- the run folder ----------------------------------------------------------------------------------------------------

class RunDir:
    """One run's folder, held by one writer: `open` picks it (new, restarted or resumed) and locks an existing one;
    `start` creates a new one; `begin`, `save` and `log` are what training calls; `close` lets go of the lock.

    Under torchrun only rank 0 is the writer: it picks, locks and writes the folder; the other ranks get its choice
    through a broadcast (so a `--resume_from_checkpoint auto` never sees two answers) and write nothing.

    A new run's folder appears only at `start` (once data and model have loaded) and goes again if the setup fails
    (`setting_up`); a resumed run's folder is left untouched until its checkpoint has loaded (`begin`)."""

    def __init__(self, cfg: RunConfig, path: Path | None, resume: Path | None = None, name: str = "",
                 writer: bool = True) -> None:
        self.cfg, self.path, self.resume, self.name, self.writer = cfg, path, resume, name, writer
        self.restart = resume is None and path is not None
        self.started = False
        self.log = RunLog(path / "logging.jsonl") if path is not None and writer else None
        output_dir = Path(cfg.run.output_dir)
        self._made_by_us = [f for f in (output_dir / name, output_dir) if not f.exists()]  # removed if setup fails
        self._lock: int | None = None
        self._base: tuple[Path, str | None] | None = None  # the base model's folder and fingerprint, once known

    @classmethod
    def open(cls, cfg: RunConfig, name: str) -> RunDir:
        """The run `cfg` asks for under output_dir/<name>: `.resume` is the checkpoint to continue from, if any."""
        from .distributed import broadcast_object, current

        d = current()
        if not d.active:
            resume, path = resume_point(cfg, name)
        else:  # rank 0 decides; an error there is every rank's error (only rank 0 prints it)
            found: tuple = (None, None, None)
            if d.is_main:
                try:
                    found = (*resume_point(cfg, name), None)
                except UserError as exc:
                    found = (None, None, str(exc))
            resume, path, error = broadcast_object(found)
            if error is not None:
                raise UserError(error)
        run = cls(cfg, path, resume, name, writer=d.is_main)
        if path is not None and run.writer:
            run.lock()
        return run

    def lock(self) -> None:
        """Take the run folder for this process alone. The kernel drops the lock when the process ends however it
        ends, so a killed run never leaves a stale lock behind; a live second writer is refused."""
        self._lock = lock_folder(self.path, "run folder")

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def setting_up(self) -> Iterator[None]:
        """The setup after `open`: if it fails, a new run's folder (and the parents it made) goes again."""
        try:
            yield
        except BaseException:
            if self.started and self.resume is None and not self.restart and self.writer:
                shutil.rmtree(self.path, ignore_errors=True)
                for folder in self._made_by_us:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only when empty
            raise

    def start(self, data_mix: dict) -> Path:
        """Create (or, for a restart, clear the log of) the run folder and record the options and data mix."""
        if self.started:
            return self.path
        if not self.writer:  # rank 0 names the folder it made
            from .distributed import broadcast_object

            self.path, self.started = broadcast_object(None), True
            return self.path
        self._start_folder(data_mix)
        from .distributed import broadcast_object, current

        if current().active:
            broadcast_object(self.path)
        return self.path

    def _start_folder(self, data_mix: dict) -> None:
        if self.restart:  # the killed attempt's log lines go; its leftovers are cleaned by the first save
            RunLog(self.path / "logging.jsonl", resume_step=0)
        elif self.resume is None:
            self.path = new_run_dir(self.cfg.run.output_dir, self.name)
            self.log = RunLog(self.path / "logging.jsonl")
            self.lock()
        self.started = True
        if self.resume is None:
            write_json(self.path / "args.json", self._args())
            write_json(self.path / "data_mix.json", data_mix)

    def begin(self, state: TrainState) -> None:
        """Training has taken up `state`: a resumed run drops the checkpoints and log lines that came after it."""
        if self.resume is None or not self.writer:
            return
        for dropped in discard_checkpoints_after(self.path, state.step):
            print(f"removed {dropped.name}: newer than the resumed {self.resume.name}, so no longer part of this run")
        self.log = RunLog(self.path / "logging.jsonl", resume_step=state.step)

    def save(self, model, tokenizer, state: TrainState, weights: dict | None = None) -> Path:
        """checkpoint-<step>: weights, tokenizer and training state, atomically; older ones pruned. `weights` is the
        full state dict where the model holds only a shard of it (FSDP). Only the writer writes; every rank gets the
        folder's name."""
        if not self.writer:
            return self.path / f"checkpoint-{state.step}"

        def write(folder: Path) -> None:
            if weights is None:
                model.save_pretrained(folder, safe_serialization=True)
            else:
                model.save_pretrained(folder, safe_serialization=True, state_dict=weights)
            tokenizer.save_pretrained(folder)
            if (folder / "adapter_config.json").is_file():
                self._record_base(folder, model)
            save_state(folder, state)
            follow_umask(folder)

        return save_checkpoint(self.path, state.step, write, self.cfg.run.save_total_limit)

    def _record_base(self, folder: Path, model) -> None:
        """An adapter checkpoint names its base by absolute folder and fingerprint (computed once per run), so export
        from anywhere finds this base and refuses another model of the same name."""
        from .adapters import fingerprint, write_base_record

        if self._base is None:
            base = _loaded_folder(model) or _base_folder(self.cfg.model.model_id_or_path)
            self._base = (base, fingerprint(base) if base is not None else None)
        if self._base[0] is None:  # a hub model: its id is what names it
            return
        write_base_record(folder, self._base[0], self.cfg.model.model_id_or_path, self._base[1])

    def _args(self) -> dict:
        """args.json's content: the options, a local base model as an absolute path (as typed, a relative path would
        name another folder, or a hub id, once export runs elsewhere)."""
        args = json.loads(self.cfg.to_json())
        typed = args.get("model", {}).get("model_id_or_path")
        if typed and Path(typed).expanduser().is_dir():
            args["model"]["model_id_or_path"] = str(Path(typed).expanduser().resolve())
        return args

    def finish(self) -> None:
        """A resumed run records what may have changed (a longer --max_steps), once its checkpoint has loaded."""
        if self.resume is not None and self.writer:
            write_json(self.path / "args.json", self._args())
