"""Training on several replicas with ``tf.distribute``: the strategy, the replica count, the global
batch and learning rate, and which worker is the chief.

``python -m core train --strategy mirrored`` trains one process on every local GPU (one replica each;
one replica on a CPU-only machine). ``--strategy multiworker`` trains one process per machine with
``MultiWorkerMirroredStrategy``: each process reads the standard ``TF_CONFIG`` environment variable,

    {"cluster": {"worker": ["node1:12345", "node2:12345"]}, "task": {"type": "worker", "index": 0}}

and the worker of index 0 (or a task of type ``chief``, when the cluster names one) is the chief, the
only one that writes the run folder. Gradients are all-reduced over the replicas each step, so every
worker ends with the same weights.

Without ``--strategy`` none of this module runs: no strategy object exists and training is exactly the
one-process path.

>>> global_batch_size(32, 4), scaled_learning_rate(1e-3, 4)
(128, 0.004)
>>> role = worker_role({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
>>> role.chief, role.index, role.workers
(False, 1, 2)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass

#: The names ``--strategy`` accepts.
STRATEGIES = ("mirrored", "multiworker")

#: How each worker's ``tf.data`` input is split: every worker builds the same pipeline (same files,
#: same split, same shuffle seed) and keeps its own slice of every global batch. ``FILE`` cannot
#: apply: the training input is prepared arrays in memory, not files.
SHARD_POLICY = "DATA"


class StrategyError(ValueError):
    """A strategy or cluster description that cannot be used; ``str(err)`` is one sentence."""


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a cluster: task type and index, the number of workers, chief or not."""

    task_type: str
    index: int
    workers: int
    chief: bool


def read_tf_config(environ=None) -> dict | None:
    """The parsed ``TF_CONFIG`` (None when it is not set); :class:`StrategyError` when it is malformed."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        raise StrategyError("TF_CONFIG is not valid JSON; it should look like "
                            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}.') from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise StrategyError('TF_CONFIG needs a "cluster" of host:port lists and this process\'s "task" '
                            '(its "type" and "index").')
    if task["type"] not in cluster or not 0 <= int(task["index"]) < len(cluster[task["type"]]):
        raise StrategyError(f"TF_CONFIG's task {task['type']} {task['index']} is not one of its cluster's "
                            f"{', '.join(f'{k} ({len(v)})' for k, v in cluster.items())}.")
    return config


def worker_role(tf_config: dict | None = None) -> WorkerRole:
    """This process's role from a parsed ``TF_CONFIG``; one lone chief when there is none.

    The chief is the task of type ``chief`` when the cluster has one, else worker 0 (TensorFlow's rule).
    """
    if not tf_config:
        return WorkerRole("worker", 0, 1, True)
    cluster, task = tf_config["cluster"], tf_config["task"]
    kind, index = str(task["type"]), int(task["index"])
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return WorkerRole(kind, index, workers, chief)


def is_chief(tf_config: dict | None = None) -> bool:
    """Whether this process writes the run: ``worker_role(tf_config).chief`` (True without a cluster)."""
    return worker_role(tf_config).chief


def make_strategy(name: str):
    """The ``tf.distribute`` strategy ``--strategy`` names.

    ``mirrored``: one replica per local GPU (one on a CPU-only machine). ``multiworker``: one process per
    machine, as ``TF_CONFIG`` lists them; collectives use TensorFlow's AUTO choice (NCCL between GPUs,
    RING over gRPC on CPUs). Create it before any other TensorFlow work in the process.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}.")
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if read_tf_config() is None:
        raise StrategyError("--strategy multiworker needs the TF_CONFIG environment variable on every worker "
                            "(the cluster's host:port list and this worker's index); see the README's "
                            "'Scaling out'.")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return _keras_ready(tf.distribute.MultiWorkerMirroredStrategy)(communication_options=options)


def _keras_ready(strategy_class):
    """``strategy_class`` with the two repairs Keras 3's ``fit`` needs on several workers.

    Both are in Keras 3.15's TensorFlow trainer, on a path only taken with two or more workers
    (keras-team/keras#20585 and tensorflow/tensorflow#72388, open: the TensorFlow tutorial itself fails):

    - before its first step, ``fit`` (and ``evaluate``, for each validation) hands ``reduce`` the first
      input batch, a tuple of per-replica values, only to learn its shapes, and TensorFlow's ``reduce``
      accepts a single value only ("Attempt to convert a value (PerReplica ...)"). A tuple (or list,
      dict) is answered with this worker's own first replica's values, which have those shapes,
      without any communication;
    - after each step it averages the scalar loss and metric results with ``reduce("MEAN", v, axis=0)``,
      which refuses a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"). A scalar is
      averaged over the replicas with ``axis=None``, which is what the call means.

    Every other call reaches TensorFlow's ``reduce`` unchanged. The epoch's logs (history, early
    stopping, checkpoints) do not come from these per-step values: Keras reads its metrics' summed
    states at the end of the epoch, over all replicas.
    """
    import tensorflow as tf

    class KerasReadyStrategy(strategy_class):
        def reduce(self, reduce_op, value, axis):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(
                    lambda v: self.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, value)
            if axis is not None and _rank(self.experimental_local_results(value)[0]) == 0:
                axis = None  # (with one replica per worker, ``value`` is a plain tensor, not PerReplica)
            return super().reduce(reduce_op, value, axis)

    KerasReadyStrategy.__name__ = KerasReadyStrategy.__qualname__ = strategy_class.__name__
    return KerasReadyStrategy


def _rank(value) -> int | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else len(shape)


def replica_count(strategy) -> int:
    """Replicas that train in step with each other, over all workers."""
    return int(strategy.num_replicas_in_sync)


def global_batch_size(per_replica: int, replicas: int) -> int:
    """Images per optimizer step: every replica takes ``per_replica`` of them."""
    return int(per_replica) * int(replicas)


def scaled_learning_rate(base: float, replicas: int) -> float:
    """The linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): a batch ``replicas``
    times larger takes a learning rate ``replicas`` times larger, so one epoch moves the weights as far."""
    return float(base) * int(replicas)


def shard_input(dataset):
    """``dataset`` with the explicit :data:`SHARD_POLICY` (instead of AUTO's fallback and its warning)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, SHARD_POLICY)
    return dataset.with_options(options)


def tf_configs(workers: list[str]) -> list[dict]:
    """One ``TF_CONFIG`` per worker (index order) for a cluster of ``host:port`` workers; worker 0 is chief.

    >>> [c["task"] for c in tf_configs(["n1:12345", "n2:12345"])]
    [{'type': 'worker', 'index': 0}, {'type': 'worker', 'index': 1}]
    """
    return [{"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": i}}
            for i in range(len(workers))]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the system's choice), for a worker started right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def loopback_tf_configs(n: int) -> list[dict]:
    """``TF_CONFIG`` s for ``n`` workers on this machine, on loopback ports free at the time of the call."""
    return tf_configs([f"127.0.0.1:{free_port()}" for _ in range(n)])


def average_across_replicas(variables) -> int:
    """Set each of ``variables`` to its mean over every replica of the ``tf.distribute`` strategy in scope.

    For state each worker computes on its own rather than from all-reduced gradients, such as batch-norm
    statistics recalibrated outside a training step: the same images through the same weights give
    values that may differ in the last bits from one process to another (the CPU kernels' thread
    partitions vary with load), and the workers would end with different models. One all-reduce makes
    them identical, bit for bit. Returns the number of variables averaged (0 with no strategy, or one
    replica: nothing to agree on). Every worker must call it at the same point, as with any collective.
    """
    import tensorflow as tf

    variables = list(variables)
    if not variables or not tf.distribute.has_strategy():
        return 0
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync < 2:
        return 0
    values = [tf.convert_to_tensor(v.value if hasattr(v, "value") else v) for v in variables]

    def mean(*local):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, list(local))

    averaged = strategy.experimental_local_results(strategy.run(mean, args=tuple(values)))[0]
    for variable, value in zip(variables, averaged):
        variable.assign(value)
    return len(variables)


def weights_digest(weights) -> str:
    """SHA-256 over a model's weight arrays in order (a Keras model or a list of arrays): equal on two
    workers only when their weights are identical, bit for bit."""
    import numpy as np

    arrays = weights.get_weights() if hasattr(weights, "get_weights") else weights
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
