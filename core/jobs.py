"""The background training queue: one training at a time per server, the others waiting in order.

A :class:`JobQueue` runs the project's own ``python -m core train`` as a separate process (then
``python -m core calibrate`` on the run's own validation split) in a worker thread it owns, so a
session that starts a training never waits for it and never blocks another session. The dashboard
holds one queue per server process (:func:`shared_queue`).

A job writes into a staging folder, ``<root>/.training/<name>/<job id>/`` (a folder the model
picker never looks in, :mod:`core.registry`), whose ``history.csv`` grows one row per epoch while
it runs; the Training history page reads it live. When the run and its calibration succeed the
folder is renamed to ``<root>/<name>/``, in one step, and the model appears in the picker.
Cancelling kills the process group; a cancelled or failed job leaves nothing behind: its staging
folder and, for an uploaded zip, its private dataset folder are removed. A failed job keeps its
last log lines, in memory, for the page to show.

An uploaded zip of class folders is unpacked by :func:`dataset_from_zip` into a private temporary
folder (mode 0700, files 0600), read with :func:`core.series.read_zip`'s zip-slip and zip-bomb
checks, and removed when its job ends. Nothing is logged: the job's log lines stay in memory,
with the temporary folder's path replaced by a label, and are written (as ``train.log``) only into
a finished model folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.data import IMAGE_SUFFIXES
from core.registry import new_folder_path, slug

REPO = Path(__file__).resolve().parent.parent
STAGING = ".training"
#: Log lines kept per job.
LOG_LINES = 400
#: Images each class needs, so that the validation split (15%, rounded) holds at least one of each.
MIN_PER_CLASS = 4
#: Most member files and expanded bytes of an uploaded dataset zip.
MAX_ZIP_FILES = 20_000
MAX_ZIP_BYTES = 512 << 20
ACTIVE = ("queued", "running", "calibrating")
FINAL = ("finished", "failed", "cancelled")
UPLOAD_LABEL = "<uploaded dataset>"
UPLOADED_DATASET = "an uploaded zip archive (unpacked privately, removed after training)"
#: Seconds a cancelled process gets to end after SIGTERM before it is killed.
KILL_GRACE = 5.0
#: The log line that starts a job's calibration (what follows is the calibration's output).
CALIBRATING = "Calibrating on the run's own validation split."

try:  # loaded once here, so the child between fork and exec only makes the call
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:  # not Linux
    _PRCTL = None


class JobError(ValueError):
    """A training request that cannot be run; ``str(err)`` is one sentence for the user."""


def _child_setup() -> None:
    """In the training process before exec: a lower priority than the dashboard's own work, and
    Linux kills it (``PR_SET_PDEATHSIG``) if the server dies, so no training outlives its server."""
    with contextlib.suppress(Exception):
        os.nice(10)
    if _PRCTL is not None:
        with contextlib.suppress(Exception):
            _PRCTL(1, signal.SIGKILL)


# ----------------------------------------------------------------------------- datasets

def class_counts(folder: str | Path) -> dict[str, int]:
    """Images per sub-folder (by file suffix, nothing is read): every sub-folder is a class to ``train``."""
    folder = Path(folder)
    return {child.name: sum(1 for f in child.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            for child in sorted(folder.iterdir()) if child.is_dir()}


def check_dataset(folder: str | Path) -> dict[str, int]:
    """The class counts of a class-folder dataset fit for training, or :class:`JobError` saying why not.

    >>> check_dataset("/no/such/folder")
    Traceback (most recent call last):
    ...
    core.jobs.JobError: The dataset folder /no/such/folder does not exist on the server.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise JobError(f"The dataset folder {folder} does not exist on the server.")
    try:
        counts = class_counts(folder)
    except OSError as err:
        raise JobError(f"The dataset folder {folder} cannot be read ({err.strerror}).") from None
    empty = [name for name, n in counts.items() if not n]
    if empty:  # training would make a class of it (hidden folders too, e.g. .ipynb_checkpoints)
        raise JobError(f"The dataset folder {folder} has a sub-folder without images ({empty[0]}); every sub-folder "
                       "is a class, so remove it or put that class's images in it.")
    if len(counts) < 2:
        raise JobError("A dataset needs two or more class folders with images in them (one folder per class, "
                       f"named after it); {folder} has {len(counts) or 'none'}.")
    few = [name for name, n in counts.items() if n < MIN_PER_CLASS]
    if few:
        raise JobError(f"Every class needs at least {MIN_PER_CLASS} images so that one is kept for validation; "
                       f"{', '.join(few[:3])} {'has' if len(few) == 1 else 'have'} fewer.")
    return counts


def dataset_from_zip(data: bytes, *, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Unpack a zip of class folders into a new private temporary folder; returns the folder.

    The archive is read in memory by :func:`core.series.read_zip` (refusing zip-slip paths, encrypted
    members and decompression bombs); images must sit one folder deep (``CLASS/image.png``), or two
    when everything is inside one top folder. Other files are ignored. The folder is mode 0700 and
    each file 0600; the caller removes it (a job does, when it ends). Raises :class:`JobError`.
    """
    import io
    import zipfile

    from core.series import SeriesError, is_zip, read_zip

    if not is_zip(data):
        raise JobError("This file is not a zip archive; zip the dataset folder (one sub-folder of images per class) "
                       "and upload the zip.")
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise JobError("The zip archive is damaged; zip the dataset folder again.") from None
    if len(members) > max_files:
        raise JobError(f"The zip archive holds {len(members):,} files, more than the {max_files:,} a training "
                       "takes from an upload; point to the dataset folder on the server instead.")
    if sum(m.file_size for m in members) > max_bytes:
        raise JobError(f"The zip archive expands to more than {_size(max_bytes)}, the most a training takes from an "
                       "upload; point to the dataset folder on the server instead.")
    try:
        files = read_zip(data, max_files=max_files, max_total_bytes=max_bytes)
    except SeriesError as err:  # its sentences speak of a series; here the archive is a dataset
        raise JobError(str(err).replace("series folder", "dataset folder").replace("the series", "the dataset")
                       .replace("one series at a time", "a smaller dataset")) from None
    images = [(PurePosixPath(name.replace("\\", "/")).parts, content) for name, content in files
              if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES]
    tops = {parts[0] for parts, _ in images if len(parts) == 3}
    if len(tops) == 1 and all(len(parts) == 3 for parts, _ in images):
        images = [(parts[1:], content) for parts, content in images]  # everything inside one top folder
    placed = [(parts, content) for parts, content in images if len(parts) == 2 and not parts[0].startswith(".")]
    if not placed:
        raise JobError("The zip archive has no images in class folders; zip a folder holding one sub-folder of images "
                       "per class, such as normal/1.png and abnormal/2.png.")
    folder = Path(tempfile.mkdtemp(prefix="medxai-dataset-"))  # mode 0700: no other user can look inside
    try:
        for (name, file_name), content in placed:
            (folder / name).mkdir(mode=0o700, exist_ok=True)
            try:
                handle = os.open(folder / name / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # the same name twice in the archive: the first one counts
                continue
            with os.fdopen(handle, "wb") as fh:
                fh.write(content)
        check_dataset(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.0f} {unit}"
    return f"{n} bytes"


# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One training request and what became of it (mutable; the queue's lock guards it)."""

    id: str
    owner: str
    title: str
    name: str  # the task name and the model folder's name
    data: Path
    temp_dir: Path | None  # the private folder of an uploaded zip, removed when the job ends
    epochs: int
    input_size: int
    options: dict
    out_root: Path
    staging: Path
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    model_folder: Path | None = None
    calibrated: bool = False
    not_calibrated: str | None = None  # why a finished model is not calibrated, in a few words
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    process: subprocess.Popen | None = field(default=None, repr=False)
    cancel_requested: bool = False


@dataclass(frozen=True)
class JobView:
    """A snapshot of a job for a page: its state, place in the queue, progress and last log lines."""

    id: str
    owner: str
    title: str
    name: str
    state: str
    epochs: int
    input_size: int
    epochs_done: int
    position: int | None  # 1: the next to run; None unless queued
    staging: Path
    model_folder: Path | None
    calibrated: bool
    error: str | None
    log: tuple[str, ...]
    submitted: float
    started: float | None
    ended: float | None
    uploaded: bool
    not_calibrated: str | None = None  # why a finished model is not calibrated, e.g. "its validation split lacks a class"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def last_lines(self, n: int = 12) -> list[str]:
        return list(self.log[-n:])


class JobQueue:
    """One training at a time, in order of submission, in a worker thread of its own.

    Parameters
    ----------
    python : str
        The interpreter that runs ``-m core`` (this one by default).
    cwd : path
        Where it runs (the repository, so ``core`` is importable).
    env : dict, optional
        Extra environment variables for the training processes.
    """

    def __init__(self, *, python: str = sys.executable, cwd: str | Path = REPO, env: dict | None = None):
        self.python, self.cwd, self.env = python, Path(cwd), dict(env or {})
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # queued job ids, first to run first
        self._worker: threading.Thread | None = None
        self._cleaned_roots: set[Path] = set()

    # ------------------------------------------------------------------ requests

    def submit(self, *, data: str | Path, title: str, out_root: str | Path, epochs: int = 10, input_size: int = 128,
               owner: str = "", temp_dir: str | Path | None = None, options: dict | None = None) -> JobView:
        """Queue a training of ``data`` (a class-folder dataset) into ``out_root/<name>``.

        ``temp_dir`` is a private folder the job owns and removes when it ends (from
        :func:`dataset_from_zip`). ``options`` are further ``train`` arguments (``width``,
        ``batch_size``, ``limit_per_class``, ``seed``, ``patience``, ``learning_rate``).
        Raises :class:`JobError` (and removes ``temp_dir``) when the request cannot run.
        """
        try:
            return self._submit(Path(data), str(title).strip(), Path(out_root), int(epochs), int(input_size),
                                owner, Path(temp_dir) if temp_dir else None, dict(options or {}))
        except BaseException:
            if temp_dir:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise

    def _submit(self, data, title, out_root, epochs, input_size, owner, temp_dir, options) -> JobView:
        from core.tasks import TASKS_DIR

        if not title:
            raise JobError("Give the model a name.")
        if not 1 <= epochs <= 500:
            raise JobError("Choose between 1 and 500 epochs.")
        if not 16 <= input_size <= 512:
            raise JobError("Choose an input size between 16 and 512 pixels.")
        unknown = set(options) - {"width", "batch_size", "limit_per_class", "seed", "patience", "learning_rate",
                                  "recalibrate_bn"}
        if unknown:
            raise JobError(f"Unknown training options: {', '.join(sorted(unknown))}.")
        check_dataset(data)
        try:
            out_root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JobError(f"The model folder {out_root} cannot be created ({err.strerror}).") from None
        self._remove_stale(out_root)
        name = slug(title)
        if (TASKS_DIR / f"{name}.json").exists():  # a default task's spec would be used (its classes, its split)
            name = f"my_{name}"
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            while True:  # reserve the folder name: another request may want the same one
                final = new_folder_path(out_root, name)
                reserved = out_root / STAGING / final.name
                try:
                    reserved.mkdir(parents=True)
                    break
                except FileExistsError:
                    continue
            (reserved / "server.pid").write_text(str(os.getpid()))
            job = Job(job_id, owner, title, final.name, data, temp_dir, epochs, input_size, options, out_root,
                      reserved / job_id)
            self._jobs[job_id] = job
            self._order.append(job_id)
            self._start_worker()
            self._changed.notify_all()
            return self._view(job)

    def cancel(self, job_id: str, owner: str | None = None) -> bool:
        """Cancel a queued or running job (only its owner's, when ``owner`` is given); True if it was active.

        A queued job is removed at once; a running one's process group is killed and the worker
        removes its folders (:meth:`wait` returns once it has).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or (owner is not None and job.owner != owner) or job.state not in ACTIVE:
                return False
            job.cancel_requested = True
            if job.state == "queued":
                self._order.remove(job_id)
                self._discard(job)
                job.state, job.ended = "cancelled", time.time()
                self._changed.notify_all()
                return True
            process = job.process
        if process is not None:
            _kill(process)
        return True

    # ------------------------------------------------------------------ views

    def view(self, job_id: str) -> JobView | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._view(job)

    def views(self, owner: str | None = None) -> list[JobView]:
        """Every job (or one owner's), in order of submission."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.submitted)
            return [self._view(j) for j in jobs if owner is None or j.owner == owner]

    def running(self) -> JobView | None:
        with self._lock:
            job = next((j for j in self._jobs.values() if j.state in ("running", "calibrating")), None)
            return None if job is None else self._view(job)

    def waiting(self) -> int:
        """How many jobs are queued."""
        with self._lock:
            return len(self._order)

    def wait(self, job_id: str, timeout: float | None = None, states=FINAL) -> JobView | None:
        """Block until the job reaches one of ``states`` (default: it ended) or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.state in states:
                    return None if job is None else self._view(job)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return self._view(job)
                self._changed.wait(timeout=left if left is None else min(left, 1.0))

    def forget(self, job_id: str, owner: str | None = None) -> None:
        """Drop an ended job from the list (its log goes with it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state in FINAL and (owner is None or job.owner == owner):
                del self._jobs[job_id]

    def _view(self, job: Job) -> JobView:
        position = self._order.index(job.id) + 1 if job.id in self._order else None
        return JobView(job.id, job.owner, job.title, job.name, job.state, job.epochs, job.input_size,
                       _epochs_done(job.model_folder or job.staging),
                       position, job.staging, job.model_folder, job.calibrated, job.error, tuple(job.log),
                       job.submitted, job.started, job.ended, job.temp_dir is not None, job.not_calibrated)

    # ------------------------------------------------------------------ the worker

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="training-queue", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._order:
                    self._changed.wait()
                job = self._jobs[self._order.pop(0)]
                job.state, job.started = "running", time.time()
                self._changed.notify_all()
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop the queue
                self._end(job, "failed", f"The training could not be run ({type(exc).__name__}).")

    def _run(self, job: Job) -> None:
        train = ["train", "--task", job.name, "--data", str(job.data), "--out", str(job.staging),
                 "--epochs", str(job.epochs), "--input-size", str(job.input_size)]
        for key, value in sorted(job.options.items()):
            train += [f"--{key.replace('_', '-')}", str(value)]
        if self._call(job, train) != 0:
            return self._failed_or_cancelled(job)
        info = _read_json(job.staging / "model.json")
        info["title"] = job.title
        info["trained_here"] = {"job": job.id, "uploaded": job.temp_dir is not None,
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        from core.card import write_card
        from core.model import json_default, write_info

        if job.temp_dir is not None:  # the private folder is gone after the run: say what it was instead
            info.setdefault("dataset", {})["path"] = UPLOADED_DATASET
            params = _read_json(job.staging / "params.json")
            if params:
                params["data"] = UPLOADED_DATASET
                (job.staging / "params.json").write_text(json.dumps(params, indent=2, default=json_default) + "\n")
        write_info(job.staging, info)
        write_card(job.staging)
        if _validation_covers_classes(job.staging, info.get("class_names") or []):
            with self._lock:
                job.state = "calibrating"
                job.log.append(CALIBRATING)
                self._changed.notify_all()
            if self._call(job, ["calibrate", "--model", str(job.staging), "--data", str(job.data)]) != 0:
                if job.cancel_requested:
                    return self._failed_or_cancelled(job)
                lines = list(job.log)  # the calibration's own lines: those after its marker
                reason = _last_error(lines[len(lines) - lines[::-1].index(CALIBRATING):] if CALIBRATING in lines
                                     else lines)
                job.not_calibrated = (f"calibration failed: {reason.rstrip('.')}" if reason
                                      else "the calibration process ended with an error")
                job.log.append("Calibration failed; the model is kept with its own, uncalibrated probabilities.")
            else:
                job.calibrated = True
        else:
            job.not_calibrated = "its validation split lacks a class"
            job.log.append("Not calibrated: the validation split does not hold every class.")
        with self._lock:
            if job.cancel_requested:
                cancelled = True
            else:
                cancelled = False
                (job.staging / "train.log").write_text("\n".join(job.log) + "\n")
                final = job.out_root / job.name
                _set_out(job.staging, final)
                os.rename(job.staging, final)  # one step: the picker sees the whole folder or nothing
                job.model_folder = final
        if cancelled:
            return self._failed_or_cancelled(job)
        _rewrite_card(final)  # its command's --out now names the folder the model lives in
        self._end(job, "finished")

    def _call(self, job: Job, arguments: list[str]) -> int:
        """Run ``python -m core ARGUMENTS`` for a job, its output going line by line into the job's log."""
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **self.env}
        with self._lock:
            if job.cancel_requested:
                return -1
            job.process = subprocess.Popen(
                [self.python, "-m", "core", *arguments], cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                start_new_session=True, preexec_fn=_child_setup)
            process = job.process
        hidden = str(job.temp_dir) if job.temp_dir else None
        for line in process.stdout:
            line = line.rstrip()
            if hidden:
                line = line.replace(hidden, UPLOAD_LABEL)
            if line:
                with self._lock:
                    job.log.append(line)
                    self._changed.notify_all()
        process.stdout.close()
        code = process.wait()
        with self._lock:
            job.process = None
        return code

    def _failed_or_cancelled(self, job: Job) -> None:
        if job.cancel_requested:
            return self._end(job, "cancelled")
        self._end(job, "failed", _last_error(job.log) or "The training process ended with an error.")

    def _end(self, job: Job, state: str, error: str | None = None) -> None:
        """Remove what an ended job leaves (its private dataset; its staging folder unless it finished)."""
        if job.process is not None:
            _kill(job.process)
        with self._lock:
            self._discard(job)
            job.state, job.error, job.ended = state, error, time.time()
            self._changed.notify_all()

    def _discard(self, job: Job) -> None:
        if job.temp_dir is not None:
            shutil.rmtree(job.temp_dir, ignore_errors=True)
        shutil.rmtree(job.staging.parent, ignore_errors=True)  # the staging folder and its reservation

    def _remove_stale(self, out_root: Path) -> None:
        """Staging folders left by a server that died mid-training (its process is gone) are removed once."""
        if out_root in self._cleaned_roots:
            return
        self._cleaned_roots.add(out_root)
        for reserved in (out_root / STAGING).glob("*") if (out_root / STAGING).is_dir() else []:
            try:
                pid = int((reserved / "server.pid").read_text())
            except (OSError, ValueError):
                pid = None
            if pid is None or (pid != os.getpid() and not _alive(pid)):
                shutil.rmtree(reserved, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(process: subprocess.Popen) -> None:
    """End a training process and everything it started: SIGTERM to its group, SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=KILL_GRACE)


def _epochs_done(run_folder: Path) -> int:
    """Rows of a run's ``history.csv`` (one per finished epoch)."""
    try:
        with open(run_folder / "history.csv") as fh:
            return max(0, sum(1 for line in fh if line.strip()) - 1)
    except OSError:
        return 0


def _last_error(lines) -> str:
    """A process's one-sentence ``error:`` line (the CLI's way to fail), else its last line; '' for none."""
    lines = [line for line in lines if line.strip()]
    last = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
    return last.removeprefix("error:").strip()


def _set_out(staging: Path, final: Path) -> None:
    """``params.json``'s ``out`` names the model's final folder, not the staging folder that is renamed into it."""
    from core.model import json_default

    params = _read_json(staging / "params.json")
    if params:
        params["out"] = str(final)
        (staging / "params.json").write_text(json.dumps(params, indent=2, default=json_default) + "\n")


def _rewrite_card(folder: Path) -> None:
    """Write a moved model folder's card again (its training command names the folder), replacing it in one step."""
    from core.card import render_card

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # the card written before stays
        part = folder / ".MODEL_CARD.md.part"
        part.write_text(render_card(folder))
        os.replace(part, folder / "MODEL_CARD.md")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _validation_covers_classes(run_folder: Path, class_names: list[str]) -> bool:
    """Whether the run's validation split (``split.json``) holds at least one image of every class."""
    names = _read_json(run_folder / "split.json").get("validation") or []
    seen = Counter(str(name).split("/", 1)[0] for name in names)
    return bool(class_names) and all(seen.get(name, 0) > 0 for name in class_names)


_SHARED: JobQueue | None = None
_SHARED_LOCK = threading.Lock()


def shared_queue() -> JobQueue:
    """The server process's one queue, shared by every session and page.

    (A process-wide object rather than ``st.cache_resource``: the Models page and the Training history
    page must see the same queue, and ``core`` never imports Streamlit.)
    """
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = JobQueue()
        return _SHARED
