"""Archive-scale scoring on a Dask cluster: ``python -m core predict|explain-eval ... --cluster ADDRESS
--out FILE.jsonl``.

Without ``--cluster`` nothing here runs: prediction and explain-eval stay in process
(:mod:`core.predict`, :mod:`core.evaluation`). With it:

- **Partitioned by file.** The inputs, in the order given, are cut into tasks of a few consecutive
  files (``files_per_task``); a file is never split. A few tasks per worker thread are in flight at a
  time, so an archive of millions of files never floods the scheduler.
- **The model is loaded once per worker**, by a worker plugin (:class:`ModelPlugin`) registered when the
  run starts: every worker, and every worker that joins or restarts later, loads the model folder and
  checks its SHA-256 against the one the run started with. Every worker must see the model folder and
  the inputs at the same paths (a shared file system).
- **Results stream to JSON Lines in input order**: one record per file, written and flushed as soon
  as every file before it is written. A predict record is exactly what ``python -m core predict --json``
  prints for that file.
- **Resumable.** A run that finds ``FILE.jsonl`` skips every input already recorded there and appends
  the rest in order; a line torn by a killed run is cut off first. ``FILE.jsonl.run.json`` says which
  model (and settings) wrote it, and a run with another model is refused rather than mixed in.
- **A worker that dies is replaced and its unfinished task rerun by Dask** (the scheduler's own
  retries); finished files are never redone, since a file counts as finished once it is recorded. A
  task that kills its worker every time (a file that crashes a decoder) is split into single files,
  and the one that still does is recorded as an error.
- **A bad file becomes an error record** (one sentence, as in process) and the run goes on.
- **A cluster left without workers stops the run** after ``WORKER_TIMEOUT`` seconds with one sentence
  (every record written so far is kept, so the same command resumes), instead of waiting for ever.

Why Dask distributed rather than Ray: README, "Scaling out".
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from distributed import WorkerPlugin

from core.predict import read_input

#: Seconds to wait for a scheduler to answer, and for a cluster to have at least one worker.
CONNECT_TIMEOUT = 20
WORKER_TIMEOUT = 120
#: Files per task: enough for the model to see them as one batch, few enough that a lost task costs little.
PREDICT_FILES_PER_TASK = 16
EXPLAIN_FILES_PER_TASK = 1
#: Faithfulness keys of :meth:`core.trust.Faithfulness.summary`, as :func:`core.evaluation.evaluate_explanations`
#: reports them.
FAITHFULNESS_KEYS = ("deletion_auc", "insertion_auc", "deletion_ratio", "insertion_ratio", "average_drop")
#: The error record of a file whose task killed its worker every time Dask tried it, alone.
KILLER_ERROR = "This file stopped the worker that read it each time it was tried, so it was not scored."


class DistributedError(Exception):
    """A cluster or results file that cannot be used; ``str(err)`` is one sentence."""


@dataclass(frozen=True)
class ArchiveRun:
    """What one run over an archive did."""

    out: Path
    inputs: int  # distinct inputs
    already: int  # recorded by an earlier run and skipped
    scored: int  # recorded by this run
    errors: int  # error records among all the inputs, this run's and earlier ones
    split_tasks: int = 0  # tasks split into single files after they killed their worker
    workers: dict = field(default_factory=dict)  # worker address -> {"pid", "files_scored"} at the end


# ----------------------------------------------------------------------------- the cluster

@contextmanager
def cluster_client(address: str, *, local_workers: int | None = None, timeout: float = CONNECT_TIMEOUT):
    """A Dask client for ``address``: a scheduler (``tcp://host:8786`` or ``host:8786``), or ``local`` /
    ``local:N`` for a cluster of N worker processes on this machine (one thread each; default: one per
    core), on loopback ports the system picks. Closed on exit (a local cluster with it). :class:`DistributedError` when no scheduler answers within ``timeout`` seconds.
    """
    from distributed import Client, LocalCluster

    address = address.strip()
    if address == "local" or address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1]) if ":" in address else (local_workers or os.cpu_count() or 1)
        except ValueError:
            raise DistributedError(f"--cluster {address} is not understood; use local, local:N or a "
                                   "scheduler's address such as tcp://host:8786.") from None
        # The scheduler's HTTP endpoint always starts (on 8787 when given no address): a loopback port the
        # system picks instead. No dashboard is served: bokeh is not installed.
        with LocalCluster(n_workers=max(1, n), threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise DistributedError(f"No Dask scheduler answers at {address} ({type(err).__name__}); start one with "
                               "`dask scheduler` and its workers with `dask worker ADDRESS` (README, "
                               "'Scaling out').") from None
    try:
        yield client
    finally:
        client.close()


class ModelPlugin(WorkerPlugin):
    """A Dask worker plugin: loads a model folder once in every worker process, checks its SHA-256
    against the run's, and counts the files the worker scores with it.

    Dask runs :meth:`setup` on every worker when the plugin is registered and on every worker that joins
    or restarts afterwards; tasks find the loaded model with ``get_worker().plugins[plugin.name]``.
    """

    def __init__(self, model_dir: str | Path, sha256: str):
        self.name = f"medxai-model-{sha256[:16]}"
        self.model_dir, self.sha256 = str(model_dir), sha256
        self.loaded, self.pid, self.files_scored = None, None, 0

    def setup(self, worker=None):
        from core.model import load_model
        from core.runtime import quiet_tensorflow

        quiet_tensorflow()
        loaded = load_model(self.model_dir)  # a ModelError's one sentence reaches the client
        if loaded.info.get("sha256") != self.sha256:
            raise DistributedError(f"The model folder {self.model_dir} on this worker holds another model than the "
                                   "one the run started with.")
        size, channels = loaded.pipeline.input_size, loaded.pipeline.channels
        loaded.predict(np.zeros((1, size, size, channels), np.float32))  # traced before the first file
        self.loaded, self.pid, self.files_scored = loaded, os.getpid(), 0

    def teardown(self, worker=None):
        self.loaded = None


def _plugin(name: str):
    from distributed import get_worker

    return get_worker().plugins[name]


def _register(client, plugin) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
    except TimeoutError:
        raise DistributedError(f"The Dask cluster has no worker after {WORKER_TIMEOUT} s; start some with "
                               "`dask worker ADDRESS`.") from None
    try:
        client.register_plugin(plugin)
    except Exception as err:  # noqa: BLE001 - any failure to load on a worker is reported as one sentence
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(f"The workers cannot load the model folder {plugin.model_dir} ({reason.rstrip('.')}); "
                               "every worker needs it at the same path.") from None


def _unregister(client, plugin) -> None:
    """Frees the workers' copies of the model (a shared cluster keeps running after this run)."""
    try:
        client.unregister_worker_plugin(plugin.name)
    except Exception:  # noqa: BLE001 - the cluster may be gone already; the run's own error matters more
        pass


def worker_counts(client, plugin_name: str) -> dict[str, dict]:
    """Per worker: its process id and how many files it has scored since it loaded the model."""
    def count(dask_worker):
        plugin = dask_worker.plugins.get(plugin_name)
        return None if plugin is None else {"pid": plugin.pid, "files_scored": plugin.files_scored}

    return {address: value for address, value in client.run(count).items() if value is not None}


# ----------------------------------------------------------------------------- the results file

def run_file(out: str | Path) -> Path:
    """The file beside ``out`` that says which model and settings wrote it."""
    return Path(f"{out}.run.json")


def read_records(out: str | Path, key: str) -> dict[str, dict]:
    """The records already in a JSON Lines results file, by ``record[key]``; {} when there is none.

    A last line without its newline (the run was killed while writing it) is cut off the file, so the
    next record starts on a line of its own.
    """
    return {str(record[key]): record for record in _records(Path(out), key)}


def _records(out: Path, key: str):
    """Each whole record of ``out`` in order; a torn last line is cut off the file once all are read."""
    if not out.exists():
        return
    torn = None
    with open(out, "rb") as fh:
        offset = 0
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                torn = offset
                break
            offset += len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DistributedError(f"Line {number} of {out} is not a JSON record, so the run cannot resume from "
                                       "it; give another --out.") from None
            if not isinstance(record, dict) or key not in record:
                raise DistributedError(f"Line {number} of {out} is not a record of this command (it has no "
                                       f"'{key}'); give another --out.")
            yield record
    if torn is not None:
        with open(out, "r+b") as fh:
            fh.truncate(torn)


def _check_run_file(out: Path, facts: dict) -> None:
    """Refuses to append to results written by another model or settings; records this run's otherwise."""
    path = run_file(out)
    if out.exists() and out.stat().st_size and path.exists():
        earlier = json.loads(path.read_text())
        differ = [k for k in facts if k != "model" and k in earlier and earlier[k] != facts[k]]  # a path may move
        if differ:
            raise DistributedError(f"{out} holds the results of another run ({', '.join(f'{k} {earlier[k]}' for k in differ)}); "
                                   "give another --out, or delete it to start again.")
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts | {"updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2)
                    + "\n")


def stream_records(client, units: list[tuple[str, object]], task, out: Path, *, key: str, files_per_task: int,
                   task_args: tuple = (), on_record=None, window: int | None = None,
                   no_worker_timeout: float = WORKER_TIMEOUT) -> ArchiveRun:
    """Run ``task(payloads, *task_args) -> records`` over the units not yet in ``out``; append in order.

    ``units`` are ``(key, payload)`` in input order, one per file; a task gets ``files_per_task``
    consecutive payloads and returns one record per payload, in order, each with ``record[key]``.
    ``on_record(record)`` is called after each record is written (an exception there stops the run,
    leaving every record written so far). Returns what the run did. :class:`DistributedError` when the
    cluster has had no worker for ``no_worker_timeout`` seconds while tasks wait (its workers were all
    stopped, or their nannies gave up restarting them): the records written so far stay, to resume from.
    """
    from distributed import KilledWorker, as_completed

    done = {str(record[key]): bool(record.get("ok")) for record in _records(out, key)}  # key -> ok, no more
    todo = [(k, payload) for k, payload in units if k not in done]
    size = max(1, int(files_per_task))
    # Slots, in input order: each holds consecutive units; a slot whose task killed its worker is
    # replaced, in place, by one slot per unit.
    slots = [todo[i:i + size] for i in range(0, len(todo), size)]
    threads = sum(info.get("nthreads", 1) for info in client.scheduler_info().get("workers", {}).values()) or 1
    window = window or max(2, 2 * threads + 1)
    results: dict[int, list[dict]] = {}
    order = list(range(len(slots)))  # slot ids in writing order
    next_slot, written_upto, split, scored, new_errors = 0, 0, 0, 0, 0
    running = {}
    pending_ids: list[int] = []

    def submit(slot_id):
        future = client.submit(task, [payload for _, payload in slots[slot_id]], *task_args, pure=False)
        running[future] = slot_id
        return future

    ac = as_completed()
    stop, lost = threading.Event(), threading.Event()

    def watch():  # a thread: cancels the tasks in flight once the cluster has long had no worker
        empty_since = None
        while not stop.wait(0.5):
            try:
                workers = client.scheduler_info(n_workers=1).get("workers")
            except Exception:  # noqa: BLE001 - a scheduler that is gone cancels the tasks itself
                continue
            if workers:
                empty_since = None
                continue
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= no_worker_timeout:
                lost.set()
                with ac.lock:
                    waiting = list(ac.futures)
                client.cancel(waiting)
                return

    watchdog = threading.Thread(target=watch, name="medxai-no-worker-watch", daemon=True)
    watchdog.start()
    try:
        with open(out, "a", encoding="utf-8") as fh:
            def refill():
                nonlocal next_slot
                while len(running) < window and (pending_ids or next_slot < len(slots)):
                    if pending_ids:
                        ac.add(submit(pending_ids.pop(0)))
                    else:
                        ac.add(submit(next_slot))
                        next_slot += 1

            refill()
            for future in ac:
                slot_id = running.pop(future)
                if future.status == "error":
                    error = future.exception()
                    if not isinstance(error, KilledWorker):
                        raise DistributedError(f"A task failed on the cluster ({type(error).__name__}: "
                                               f"{str(error).splitlines()[0] if str(error) else ''}).") from None
                    units_of = slots[slot_id]
                    if len(units_of) > 1:  # find the file that kills workers: one task per file
                        split += 1
                        new_ids = list(range(len(slots), len(slots) + len(units_of)))
                        slots.extend([[unit] for unit in units_of])
                        at = order.index(slot_id)
                        order[at:at + 1] = new_ids
                        pending_ids[:0] = new_ids
                    else:
                        results[slot_id] = [{key: units_of[0][0], "ok": False, "error": KILLER_ERROR}]
                elif future.status == "cancelled" and lost.is_set():
                    raise DistributedError(f"The cluster has had no worker for {no_worker_timeout:g} s, so the run "
                                           f"stopped with {written_upto} of {len(order)} tasks written; start "
                                           "workers and run the same command again to resume.")
                elif future.status == "cancelled":  # e.g. the scheduler restarted under us
                    raise DistributedError("The cluster dropped a task before it finished (its scheduler may have "
                                           "restarted); run the same command again to resume.")
                else:
                    results[slot_id] = future.result()
                future.release()
                while written_upto < len(order) and order[written_upto] in results:
                    for record in results.pop(order[written_upto]):
                        fh.write(json.dumps(record) + "\n")
                        fh.flush()
                        scored += 1
                        new_errors += not record.get("ok")
                        if on_record is not None:
                            on_record(record)
                    written_upto += 1
                refill()
    finally:
        stop.set()
        watchdog.join()
        if running:
            client.cancel(list(running))
    errors = sum(1 for k, _ in units if k in done and not done[k]) + new_errors
    return ArchiveRun(out=Path(out), inputs=len(units), already=len(units) - len(todo), scored=scored, errors=errors,
                      split_tasks=split)


def _unique(keys) -> list[str]:
    seen, unique = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            unique.append(k)
    return unique


# ----------------------------------------------------------------------------- predict

def archive_paths(paths) -> list[str]:
    """The inputs of an archive run: each file as given, each folder as every file under it (sorted,
    hidden files left out), in the order given, each once. DICOM files often have no suffix, so none is
    required; a file that is not an image gets an error record like any other."""
    files = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += [str(p) for p in sorted(path.rglob("*"))
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        else:
            files.append(str(path))
    return _unique(files)


def predict_archive(paths, model_dir: str | Path, out: str | Path, *, client, frame: int | None = None,
                    files_per_task: int = PREDICT_FILES_PER_TASK, read=read_input, on_record=None,
                    window: int | None = None) -> ArchiveRun:
    """Predict every input on the cluster behind ``client`` into the JSON Lines file ``out``.

    Each record is what :func:`core.predict.predict_files` gives for that file (``python -m core predict
    --json``). ``read`` turns a path into bytes on the worker (the file's bytes by default). See the
    module's docstring for order, resume, worker failures and bad files.

    >>> # with cluster_client("local:2") as client:
    >>> #     run = predict_archive(["a.dcm", "b.png"], "assets/models/chest_xray", "scores.jsonl", client=client)
    """
    from core.model import read_info

    out, model_dir = Path(out), Path(model_dir).resolve()  # workers resolve nothing against our folder
    sha256 = read_info(model_dir)["sha256"]
    _check_run_file(out, {"command": "predict", "model": str(model_dir), "model_sha256": sha256, "frame": frame})
    plugin = ModelPlugin(model_dir, sha256)
    _register(client, plugin)
    try:
        # Records name each file as given; workers open it by its absolute path.
        units = [(p, (p, str(Path(p).absolute()))) for p in _unique(str(p) for p in paths)]
        run = stream_records(client, units, _predict_task, out, key="file", files_per_task=files_per_task,
                             task_args=(plugin.name, frame, read), on_record=on_record, window=window)
        return replace(run, workers=worker_counts(client, plugin.name))
    finally:
        _unregister(client, plugin)


def _predict_task(files: list[tuple[str, str]], plugin_name: str, frame, read) -> list[dict]:
    """On a worker: the records of ``files`` ((as given, absolute path) pairs), in order, from the
    worker's model."""
    from core.predict import predict_files

    plugin = _plugin(plugin_name)
    paths = [path for _, path in files]
    try:
        records = list(predict_files(paths, plugin.loaded, frame, read=read))
    except Exception:  # noqa: BLE001 - something beyond one file's ScanError: each file on its own
        records = [_predict_one(path, plugin.loaded, frame, read) for path in paths]
    plugin.files_scored += len(paths)
    return [record | {"file": given} for record, (given, _) in zip(records, files)]


def _predict_one(path: str, loaded, frame, read) -> dict:
    from core.predict import predict_files

    try:
        return next(iter(predict_files([path], loaded, frame, read=read)))
    except Exception as err:  # noqa: BLE001 - a bad file never stops the run
        return {"file": str(path), "ok": False,
                "error": f"This file could not be scored ({type(err).__name__})."}


# ----------------------------------------------------------------------------- explain-eval

def explain_archive(loaded, data_dir: str | Path, out: str | Path, *, client, limit: int = 20,
                    sanity_limit: int = 3, files_per_task: int = EXPLAIN_FILES_PER_TASK, on_record=None,
                    log=print, window: int | None = None) -> tuple[dict, ArchiveRun]:
    """:func:`core.evaluation.evaluate_explanations` on the cluster: the same images, one record per image
    in ``out`` (every method's faithfulness scores, and the sanity check for the first ``sanity_limit``),
    merged into the same report. An image that cannot be read is an error record, counted in the
    report's ``skipped``, and the run goes on.

    SmoothGrad's noise is drawn from a seed of the image's name, so an image scores the same on any worker
    and in a resumed run (in process it comes from NumPy's global state).
    """
    from core import data as data_mod
    from core.evaluation import EvaluationError, evaluation_items

    names = loaded.class_names
    items, subset = evaluation_items(loaded, data_dir, limit)
    if not items:
        raise EvaluationError(f"No image in {data_dir} could be scored: it holds none in the model's classes "
                              f"({', '.join(names)}).")
    out = Path(out)
    sha256 = loaded.info["sha256"]
    _check_run_file(out, {"command": "explain-eval", "model": str(Path(loaded.path).resolve()),
                          "model_sha256": sha256, "data": str(Path(data_dir).resolve()), "limit": limit,
                          "sanity_limit": sanity_limit})
    log(f"scoring {len(items)} images from {subset} on the cluster")
    units = [(data_mod.item_key(item, names),
              (data_mod.item_key(item, names), str(item.path.absolute()), n < sanity_limit))
             for n, item in enumerate(items)]
    plugin = ModelPlugin(Path(loaded.path).resolve(), sha256)
    _register(client, plugin)
    try:
        run = stream_records(client, units, _explain_task, out, key="image", files_per_task=files_per_task,
                             task_args=(plugin.name,), on_record=on_record, window=window)
        run = replace(run, workers=worker_counts(client, plugin.name))
    finally:
        _unregister(client, plugin)
    records = read_records(out, "image")
    ordered = [records[k] for k, _ in units if k in records]
    return summarise_explanations(ordered, model=str(loaded.path), task=loaded.task, subset=subset,
                                  map_score=loaded.map_score), run


def _explain_task(payloads: list[tuple[str, str, bool]], plugin_name: str) -> list[dict]:
    plugin = _plugin(plugin_name)
    records = [explanation_scores(plugin.loaded, key, path, sanity=sanity) for key, path, sanity in payloads]
    plugin.files_scored += len(payloads)
    return records


def explanation_scores(loaded, key: str, path: str | Path, *, sanity: bool) -> dict:
    """One image's record: every method's faithfulness scores and, with ``sanity``, its randomisation
    check, computed as :func:`core.evaluation.evaluate_explanations` does; an error record when the image
    cannot be read or scored."""
    from core import data as data_mod
    from core.io import ScanError
    from core.saliency import CAM_METHODS, METHODS
    from core.trust import faithfulness, sanity_check

    record = {"image": key, "file": str(path)}
    try:
        tensor = data_mod.prepare_image(Path(path), loaded.pipeline)[None]
    except ScanError as err:
        return record | {"ok": False, "error": str(err).split(": ", 1)[-1]}
    except Exception as err:  # noqa: BLE001 - a bad file never stops the run
        return record | {"ok": False, "error": f"This file could not be scored ({type(err).__name__})."}
    layer = loaded.last_conv
    target = int(np.argmax(loaded.uncalibrated(tensor)[0]))
    methods = {}
    for method in [m for m in METHODS if layer or m not in CAM_METHODS]:
        use_layer = layer if method in CAM_METHODS else None
        if method == "smoothgrad":
            np.random.seed(zlib.crc32(key.encode()))  # SmoothGrad draws from NumPy's global generator
        raw = loaded.explainer.saliency(tensor, method, target, use_layer)
        scores = {k: float(v) if k != "informative" else bool(v)
                  for k, v in faithfulness(loaded, tensor, raw, target).summary().items()}
        if sanity:
            check = sanity_check(loaded, tensor, method, target, use_layer, original=raw)
            scores |= {"sanity_spearman": float(check.spearman[-1]), "sanity_pass": bool(check.passes)}
        methods[method] = scores
    return record | {"ok": True, "predicted": loaded.class_names[target], "methods": methods}


def summarise_explanations(records: list[dict], *, model: str, task: str, subset: str,
                           map_score: str = "logit") -> dict:
    """Per-image records merged into :func:`core.evaluation.evaluate_explanations`'s report: per method the
    mean and standard deviation of each score over the images where blurring the whole image lowers the
    class probability ("informative"), the sanity checks passed, the images scored and uninformative;
    plus ``skipped`` images that could not be read and their reasons."""
    scored = [r for r in records if r.get("ok")]
    methods = list(dict.fromkeys(m for r in scored for m in r["methods"]))
    summary = {}
    for method in methods:
        values = {k: [] for k in FAITHFULNESS_KEYS + ("sanity_spearman",)}
        passes, uninformative = [], 0
        for record in scored:
            scores = record["methods"][method]
            if scores["informative"]:
                for k in FAITHFULNESS_KEYS:
                    values[k].append(scores[k])
            else:
                uninformative += 1
            if "sanity_spearman" in scores:
                values["sanity_spearman"].append(scores["sanity_spearman"])
                passes.append(scores["sanity_pass"])
        entry = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in values.items() if v}
        entry["sanity_passed"] = f"{sum(passes)}/{len(passes)}"
        entry["faithfulness_images"] = len(values["deletion_auc"])
        entry["uninformative_images"] = uninformative
        summary[method] = entry
    reasons = Counter(r["error"] for r in records if not r.get("ok"))
    return {"model": model, "task": task, "images": len(scored), "subset": subset, "map_score": map_score,
            "sanity_images": sum(1 for r in scored if any("sanity_spearman" in s for s in r["methods"].values())),
            "methods": summary, "skipped": sum(reasons.values()), "skipped_reasons": dict(reasons.most_common())}
