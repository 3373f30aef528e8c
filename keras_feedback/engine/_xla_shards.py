"""The fused engine's batch shards, run side by side on CPU.

XLA:CPU runs one loop on one core; on CPU the batch is split into
``shard_count`` parts, each its own pair of compiled calls, which
TensorFlow's executor runs concurrently on the cores.
"""

import os

import tensorflow as tf

# Batch shards run side by side on CPU (see ``shard_count``).
MAX_SHARDS = 8
MIN_SHARD_ROWS = 8


def cores():
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def shard_count(batch=None):
    """How many batch shards the engine runs side by side (CPU only).

    XLA:CPU runs one loop on one core: a recurrence is a chain of small
    matmuls that it does not split across threads (it runs as fast pinned
    to one core). Independent loops over parts of the batch, each a
    separate compiled call, are run concurrently by TensorFlow's executor
    (the gain: docs/engine.md, "Measurements behind the code", M7).
    One shard per core available to this replica, at least
    ``MIN_SHARD_ROWS`` rows each when the batch is known; one on a GPU.
    """
    if tf.config.list_logical_devices("GPU"):
        return 1
    count = cores()
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    if threads:
        count = min(count, threads)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    shards = min(MAX_SHARDS, max(1, count // replicas))
    if batch is not None:
        shards = min(shards, max(1, batch // MIN_SHARD_ROWS))
    return shards


def shard_sizes(batch, shards):
    """The rows of each of ``shards`` parts of a batch of ``batch`` rows,
    as even as they can be (the first ones one larger)."""
    return tf.stack([(batch + shards - 1 - i) // shards for i in range(shards)])


def split_batch(structure, sizes):
    """``structure``'s tensors split along axis 0 into ``len(sizes)`` parts
    (None stays None in every part)."""
    shards = int(sizes.shape[0])
    parts = [
        [None] * shards if x is None else tf.split(x, sizes, axis=0)
        for x in tf.nest.flatten(structure)
    ]
    return [
        tf.nest.pack_sequence_as(structure, [p[i] for p in parts])
        for i in range(shards)
    ]


def concat_batch(parts):
    """The parts of ``split_batch``'s results (structures alike) put back
    together along axis 0 (None stays None)."""

    def concat(*tensors):
        return None if tensors[0] is None else tf.concat(tensors, 0)

    return tf.nest.map_structure(concat, *parts)


def run_sharded(run_one, params, per_example, inputs, mask, states):
    """``run_one(params, inputs, mask, states)`` on each of ``shard_count``
    parts of the batch (``params``' ``per_example`` keys split with it), its
    results put back together (``concat_batch``); one call when
    ``per_example`` is None (unknown) or there is one shard."""
    count = 1 if per_example is None else shard_count(inputs.shape[0])
    if count == 1:
        return run_one(params, inputs, mask, states)
    sharded = {k: params[k] for k in per_example}
    parts = split_batch(
        (inputs, mask, states, sharded), shard_sizes(tf.shape(inputs)[0], count)
    )
    return concat_batch(
        [
            run_one({**params, **sharded_i}, inputs_i, mask_i, states_i)
            for inputs_i, mask_i, states_i, sharded_i in parts
        ]
    )
