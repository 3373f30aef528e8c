"""Training under ``tf.distribute``: a strategy picked from the environment.

``strategy_from_environment()`` returns the strategy a training script should
build and compile its model under:

- ``TF_CONFIG`` set: ``tf.distribute.MultiWorkerMirroredStrategy``. The
  variable is validated first (JSON, ``cluster``/``task``/``type``/``index``,
  ``host:port`` addresses) and this task's port is checked to be free, so a
  bad configuration raises ``ValueError`` instead of failing inside the gRPC
  server or hanging;
- several local devices (GPUs, or logical CPU devices where there is no
  GPU): ``tf.distribute.MirroredStrategy`` over them;
- otherwise the default strategy.

Only ``tf.distribute`` communicates. The other helpers cover what a
distributed run needs around it: the per-replica batch of a global batch
(``per_replica_batch_size``), data sharding (``shard_by_data``), which task
writes the outputs (``is_chief``, ``save_model``), a fault-tolerance callback
(``backup_and_restore``) and ``TF_CONFIG`` values for workers on one machine
(``local_cluster``). See ``docs/distributed.md``.
"""

import errno
import json
import os
import socket
import tempfile
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Union

import keras
import tensorflow as tf

from keras_feedback._api import public

__all__ = [
    "backup_and_restore",
    "is_chief",
    "local_cluster",
    "parse_tf_config",
    "per_replica_batch_size",
    "save_model",
    "shard_by_data",
    "strategy_from_environment",
]

# The jobs of a MultiWorkerMirroredStrategy cluster ("ps" belongs to
# ParameterServerStrategy, "evaluator" to a side-car that trains nothing).
_JOBS = ("chief", "worker")


def _split_address(address, where):
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(
            f"TF_CONFIG: {where} must be a 'host:port' string, got {address!r}"
        )
    host, port = address.rsplit(":", 1)
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ValueError(
            f"TF_CONFIG: {where} must be 'host:port' with a port in 1..65535, "
            f"got {address!r}"
        )
    return host.strip("[]"), number


@public("keras_feedback.training.distribute.parse_tf_config")
def parse_tf_config(value: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Parses and validates a ``TF_CONFIG`` value for multi-worker training.

    Args:
        value: the ``TF_CONFIG`` string (JSON), or the already parsed dict.

    Returns:
        A dict ``{"cluster": {job: [address, ...]}, "task": {"type": job,
        "index": int}}`` holding only those keys.

    Raises:
        ValueError: the value is not JSON, misses ``cluster`` or ``task``,
            names jobs other than ``"chief"`` and ``"worker"``, has an
            address that is not ``host:port``, or a task that is not in the
            cluster. The message names the offending key and value.

    Example:

    >>> from keras_feedback.training import distribute
    >>> distribute.parse_tf_config(
    ...     '{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},'
    ...     ' "task": {"type": "worker", "index": 1}}')["task"]
    {'type': 'worker', 'index': 1}
    """
    config = value
    if isinstance(value, (str, bytes)):
        try:
            config = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"TF_CONFIG is not valid JSON ({error}), got {value!r}"
            ) from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {value!r}")
    for key in ("cluster", "task"):
        if not isinstance(config.get(key), dict):
            raise ValueError(
                f"TF_CONFIG needs a {key!r} object, got {config.get(key)!r} "
                f"in {value!r}"
            )
    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - set(_JOBS))
    if unknown or not cluster:
        raise ValueError(
            "TF_CONFIG: MultiWorkerMirroredStrategy clusters have the jobs "
            f"{list(_JOBS)}, got cluster jobs {sorted(cluster)}"
        )
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG: at most one chief, got {cluster['chief']!r}")
    seen = set()
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(
                f"TF_CONFIG: cluster[{job!r}] must be a non-empty list of "
                f"'host:port' strings, got {addresses!r}"
            )
        for i, address in enumerate(addresses):
            _split_address(address, f"cluster[{job!r}][{i}]")
            if address in seen:
                raise ValueError(
                    f"TF_CONFIG: address {address!r} appears twice in the cluster"
                )
            seen.add(address)
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ValueError(
            f"TF_CONFIG: task['type'] must be one of the cluster's jobs "
            f"{sorted(cluster)}, got {task_type!r}"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG: task['index'] must be an integer, got {index!r}")
    if not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG: task['index'] must be in 0..{len(cluster[task_type]) - 1} "
            f"(cluster[{task_type!r}] has {len(cluster[task_type])} "
            f"address(es)), got {index}"
        )
    return {
        "cluster": {job: list(cluster[job]) for job in cluster},
        "task": {"type": task_type, "index": index},
    }


def _check_port_free(config):
    """Raises ValueError when this task's port is already bound here."""
    task = config["task"]
    address = config["cluster"][task["type"]][task["index"]]
    _, port = _split_address(address, "the task's address")
    # The gRPC server listens on every interface; SO_REUSEADDR keeps sockets
    # in TIME_WAIT (a worker just restarted) from counting as "in use".
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("", port))
    except OSError as error:
        reason = (
            "is already in use"
            if error.errno == errno.EADDRINUSE
            else (f"cannot be bound ({error})")
        )
        raise ValueError(
            f"TF_CONFIG: port {port} of this task ({task['type']} "
            f"{task['index']}, address {address!r}) {reason} on this machine; "
            "stop the process holding it or give this task another port"
        ) from None
    finally:
        probe.close()


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras gives.

    In multi-worker mode Keras 3.15's ``fit`` calls ``strategy.reduce`` with a
    whole ``(x, y)`` batch (to build the model) and with ``axis=0`` on scalar
    metrics; ``MultiWorkerMirroredStrategy`` accepts neither ("Attempt to
    convert a value (PerReplica...)", "Invalid reduction dimension 0 for
    input with 0 dimensions"). This reduces each value of a structure on its
    own, across replicas only where a value has no axis to reduce.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return parent.reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


def _local_devices():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


@public("keras_feedback.training.distribute.strategy_from_environment")
def strategy_from_environment(
    environ: Optional[Mapping[str, str]] = None,
) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy the environment calls for.

    Call it at the start of the program, before any other TensorFlow
    operation (``MultiWorkerMirroredStrategy`` configures the runtime), then
    build and compile the model under ``strategy.scope()``.

    Args:
        environ: mapping read for ``TF_CONFIG``; defaults to ``os.environ``.

    Returns:
        ``tf.distribute.MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is
        set and not empty (a subclass whose ``reduce`` accepts the nested
        values Keras's ``fit`` passes it, without which ``fit`` fails with
        two or more workers); ``tf.distribute.MirroredStrategy`` over the local
        GPUs when there are several, or over the logical CPU devices when
        there is no GPU and several are configured; the default strategy
        (``tf.distribute.get_strategy()``) otherwise.

    Raises:
        ValueError: ``TF_CONFIG`` is malformed (see ``parse_tf_config``) or
            this task's port is already in use on this machine.

    Example:

    >>> from keras_feedback.training import distribute
    >>> strategy = distribute.strategy_from_environment({})
    >>> strategy.num_replicas_in_sync
    1
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")
    if raw.strip():
        config = parse_tf_config(raw)
        _check_port_free(config)
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(config["cluster"]),
            task_type=config["task"]["type"],
            task_id=config["task"]["index"],
            rpc_layer="grpc",
        )
        return _MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    devices = _local_devices()
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


@public("keras_feedback.training.distribute.per_replica_batch_size")
def per_replica_batch_size(
    global_batch_size: int, strategy: Optional[tf.distribute.Strategy] = None
) -> int:
    """The batch each replica sees when ``global_batch_size`` is split evenly.

    Batch the dataset with the *global* batch; ``tf.distribute`` splits each
    batch across the replicas. An uneven split would change what a step
    computes, so it is an error here.

    Args:
        global_batch_size: positive int, the batch of one training step over
            all replicas.
        strategy: a ``tf.distribute.Strategy``; defaults to the current one.

    Returns:
        ``global_batch_size // strategy.num_replicas_in_sync``.

    Raises:
        ValueError: the global batch is not a positive integer or not a
            multiple of the number of replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if (
        isinstance(global_batch_size, bool)
        or not isinstance(global_batch_size, int)
        or global_batch_size < 1
    ):
        raise ValueError(
            f"global_batch_size must be a positive integer, got {global_batch_size!r}"
        )
    if global_batch_size % replicas:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the "
            f"number of replicas ({replicas}); use a multiple of {replicas}, "
            f"e.g. {replicas * max(1, global_batch_size // replicas)}"
        )
    return global_batch_size // replicas


@public("keras_feedback.training.distribute.shard_by_data")
def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with auto-sharding by element (``AutoShardPolicy.DATA``).

    Every worker reads the whole input and keeps its share of each global
    batch, so a step sees the same examples, in the same order, as one
    device with the same global batch. For datasets of many files,
    ``AutoShardPolicy.FILE`` (the default's first choice) reads less; see
    ``docs/distributed.md``.

    Args:
        dataset: a ``tf.data.Dataset``, batched with the global batch.

    Returns:
        The dataset with the sharding option set.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def _task(strategy):
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return None, None, {}
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


@public("keras_feedback.training.distribute.is_chief")
def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this task writes the outputs of a run (model, logs, figures).

    Args:
        strategy: a ``tf.distribute.Strategy``; defaults to the current one.

    Returns:
        True on one machine; in a multi-worker cluster, True for the
        ``"chief"`` task, or for ``"worker"`` 0 when there is no chief.
    """
    task_type, task_id, cluster = _task(strategy or tf.distribute.get_strategy())
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


@public("keras_feedback.training.distribute.save_model")
def save_model(
    model: keras.Model,
    filepath: Union[str, os.PathLike],
    strategy: Optional[tf.distribute.Strategy] = None,
) -> Union[str, os.PathLike, None]:
    """Saves ``model`` from every task and keeps only the chief's file.

    Call it on every task: saving reads every variable, and reading one that
    is synchronized on read (a metric's state) can be a collective operation
    that every worker has to join. The chief writes ``filepath``; the other
    tasks write into a temporary folder that is deleted at once, so that no
    two tasks write one file.

    Args:
        model: the ``keras.Model`` to save.
        filepath: where the chief saves it (``.keras``).
        strategy: a ``tf.distribute.Strategy``; defaults to the current one.

    Returns:
        ``filepath`` on the chief, None on the other tasks.
    """
    if is_chief(strategy):
        model.save(filepath)
        return filepath
    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, os.path.basename(os.fspath(filepath))))
    return None


@public("keras_feedback.training.distribute.backup_and_restore")
def backup_and_restore(
    backup_dir: Union[str, os.PathLike],
    strategy: Optional[tf.distribute.Strategy] = None,
    double_checkpoint: bool = True,
) -> keras.callbacks.BackupAndRestore:
    """A ``keras.callbacks.BackupAndRestore`` that is safe with many workers.

    Keras's callback writes its checkpoint from every task; tasks sharing one
    folder would overwrite each other's file while it is written. Here each
    task gets its own sub-folder (``<backup_dir>/<task type>-<index>``;
    synchronous training keeps them identical). It saves at the end of every
    epoch: in Keras 3 a restart resumes at the start of the epoch that was
    interrupted, so an integer ``save_freq`` would restore weights from the
    middle of an epoch and then train that epoch again from its first batch.
    Make epochs short (``steps_per_epoch``) to lose little work to a failure.

    Args:
        backup_dir: folder for the checkpoints (shared storage, or a disk
            that outlives the task on a cluster); it must not be used for
            anything else. Keras deletes each task's sub-folder when
            ``fit`` completes.
        strategy: a ``tf.distribute.Strategy``; defaults to the current one.
        double_checkpoint: keep the previous checkpoint too, and fall back to
            it when the latest cannot be read (a task killed while writing).

    Returns:
        The ``keras.callbacks.BackupAndRestore`` to pass to ``fit``.
    """
    task_type, task_id, _ = _task(strategy or tf.distribute.get_strategy())
    name = "local" if task_type is None else f"{task_type}-{task_id}"
    return keras.callbacks.BackupAndRestore(
        os.path.join(os.fspath(backup_dir), name),
        save_freq="epoch",
        double_checkpoint=double_checkpoint,
    )


@public("keras_feedback.training.distribute.local_cluster")
def local_cluster(num_workers: int, host: str = "127.0.0.1") -> List[Dict[str, Any]]:
    """``TF_CONFIG`` values for ``num_workers`` workers on this machine.

    Picks free ports by binding port 0 (all at once, so they differ). Set
    worker ``i``'s environment variable to ``json.dumps(configs[i])``;
    worker 0 is the chief.

    Args:
        num_workers: positive int.
        host: the address the workers listen on.

    Returns:
        A list of ``num_workers`` dicts ``{"cluster": ..., "task": ...}``.
    """
    if (
        isinstance(num_workers, bool)
        or not isinstance(num_workers, int)
        or (num_workers < 1)
    ):
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
    probes = [
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(num_workers)
    ]
    try:
        for probe in probes:
            probe.bind((host, 0))
        addresses = [f"{host}:{probe.getsockname()[1]}" for probe in probes]
    finally:
        for probe in probes:
            probe.close()
    cluster = {"worker": addresses}
    return [
        {"cluster": cluster, "task": {"type": "worker", "index": i}}
        for i in range(num_workers)
    ]
