"""The fused engine's loops over time and their in-place writes.

Outputs (and what the backward pass keeps) are written into preallocated
tensors by in-place dynamic-update-slices; nothing is a TensorArray or
TensorList (which XLA cannot size across the compiled loop's boundary).
"""

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops


def start(t, rank, axis=0):
    """Start indices of a dynamic-update-slice at ``t`` on ``axis``."""
    zero = tf.zeros([], tf.int32)
    t = tf.cast(t, tf.int32)
    return tf.stack([t if a == axis else zero for a in range(rank)])


def to_storage(x):
    """``x`` as the loops keep it: bfloat16 as its bits (uint16), else as is.

    XLA:CPU has no bfloat16 dynamic-update-slice: it converts the whole
    buffer to float32, updates it and converts it back, at every step (not
    in place: O(T) work per step; docs/engine.md, M8). On the bits the
    update is in place. Reads (dynamic slices)
    of bfloat16 are fine.
    """
    return tf.bitcast(x, tf.uint16) if x.dtype == tf.bfloat16 else x


def from_storage(x):
    """The inverse of ``to_storage``."""
    return tf.bitcast(x, tf.bfloat16) if x.dtype == tf.uint16 else x


def _stored_like(buffer, value):
    return to_storage(value) if buffer.dtype == tf.uint16 else value


def write(buffer, t, value):
    """``buffer[t] = value``: an in-place dynamic-update-slice (also for an
    empty batch, where a scatter does not compile)."""
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer, _stored_like(buffer, value)[None], start(t, buffer.shape.rank)
    )


def write_batch_major(buffer, t, value):
    """``buffer[:, t] = value`` for a ``(B, T, ...)`` buffer."""
    return gen_xla_ops.xla_dynamic_update_slice(
        buffer,
        tf.expand_dims(_stored_like(buffer, value), 1),
        start(t, buffer.shape.rank, axis=1),
    )


def time_major(x):
    return tf.transpose(x, [1, 0, 2])


def may_be_empty(sequences):
    """Whether the time axis of ``(B, T, ...)`` ``sequences`` may have no
    step (a dynamic or zero length): see ``at_least_one_step``."""
    return not sequences.shape[1]


def at_least_one_step(sequences):
    """``sequences`` (``(B, T, ...)`` or None) padded to one step (zeros,
    False) when ``T`` is 0.

    A compiled loop holds reads and writes of a step even when it runs none,
    and XLA compiles them for the shapes it runs: a step of an empty time
    axis is out of bounds. The padding is of ``max(1 - T, 0)`` steps, a
    no-op that XLA removes for any ``T > 0``.
    """
    if sequences is None:
        return None
    padding = [[0, 0], [0, tf.maximum(1 - tf.shape(sequences)[1], 0)]]
    return tf.pad(sequences, padding + [[0, 0]] * (sequences.shape.rank - 2))


def _relaxed(shape):
    """``shape`` with every axis but the last unknown."""
    if not shape.rank:
        return shape
    return tf.TensorShape([None] * (shape.rank - 1) + shape[-1:])


def loop(
    num_steps,
    read,
    body,
    carry,
    buffers,
    index,
    steps=None,
    writers=None,
):
    """Runs ``body`` for ``t`` in ``range(num_steps)``; returns carry, buffers.

    ``buffers`` is a structure of tensors (a named tuple of lists, say);
    ``read(t, buffers)`` slices step ``t``'s inputs out of whole-sequence
    tensors (a buffer may hold the inputs that its own writes replace, step
    by step, as long as no step reads what an earlier one wrote: the read
    of step ``t`` sees the writes of the steps before ``t - 1`` only);
    ``body(t, current, carry) -> (carry, values)``, ``values`` of the
    structure of ``buffers``; each value is written into its buffer at the
    index that ``index(t)`` (a structure like ``buffers``) holds for it, by
    the writer that ``writers`` (the same, or None: ``write``, along the
    first axis) holds.

    The while loop reads one step ahead and writes one step behind,
    carrying the slices and the values (docs/engine.md, M9 and M11): XLA:CPU
    does not vectorize an elementwise fusion that also holds a dynamic slice
    of a tensor the loop only reads, and fuses exactly those unless a loop
    boundary separates them; and a slice of a buffer that the step's own
    write replaces, fused into several of the step's fusions, makes XLA copy
    the whole buffer at every step (O(T) per step). The last write then
    falls after the loop, where XLA copies the whole buffer first (one more
    buffer of its size); an extra iteration that only writes keeps it in
    the loop. ``steps`` (static) unrolls the loop instead.
    """
    structure = buffers
    flat_writers = (
        [write] * len(tf.nest.flatten(buffers))
        if writers is None
        else tf.nest.flatten(writers)
    )

    def pack(flat):
        return tf.nest.pack_sequence_as(structure, flat)

    def flat_read(t, flat):
        return tf.nest.map_structure(from_storage, read(t, pack(flat)))

    def flat_body(t, current, carry):
        carry, values = body(t, current, carry)
        return carry, [to_storage(v) for v in tf.nest.flatten(values)]

    def write_all(flat, indices, values):
        return [w(b, i, v) for w, b, i, v in zip(flat_writers, flat, indices, values)]

    def indices(t):
        return [tf.convert_to_tensor(i, tf.int32) for i in tf.nest.flatten(index(t))]

    flat = [to_storage(b) for b in tf.nest.flatten(buffers)]
    if steps is not None:
        for t in range(steps):
            carry, values = flat_body(t, flat_read(t, flat), carry)
            flat = write_all(flat, tf.nest.flatten(index(t)), values)
        return carry, pack([from_storage(b) for b in flat])

    def iteration(t, current, carry, flat, pending_index, pending):
        flat = write_all(flat, pending_index, pending)

        def run_step():
            return flat_body(t, current, carry)

        # The extra last iteration (t == num_steps) only writes.
        carry, values = tf.cond(t < num_steps, run_step, lambda: (carry, list(pending)))
        ahead = flat_read(tf.minimum(t + 1, num_steps - 1), flat)
        return t + 1, ahead, carry, flat, indices(t), values

    # The first write (zeros at step 0's index) is overwritten a step
    # later.
    loop_vars = (
        tf.constant(0),
        flat_read(0, flat),
        carry,
        flat,
        indices(0),
        [
            tf.zeros_like(b[0] if w is write else b[:, 0])
            for w, b in zip(flat_writers, flat)
        ],
    )
    _, _, carry, flat, _, _ = while_loop(
        lambda t, *_: t <= num_steps, iteration, loop_vars
    )
    return carry, pack([from_storage(b) for b in flat])


def while_loop(cond, body, loop_vars):
    """``tf.while_loop`` whose loop variables keep only their last axis'
    static size: static shapes can be sharper before the first iteration
    than for any; XLA knows every shape when it compiles."""
    invariants = tf.nest.map_structure(lambda x: _relaxed(x.shape), loop_vars)

    def shaped_body(*loop_vars):
        loop_vars = body(*loop_vars)
        for x, shape in zip(tf.nest.flatten(loop_vars), tf.nest.flatten(invariants)):
            x.set_shape(shape)
        return loop_vars

    return tf.while_loop(cond, shaped_body, loop_vars, shape_invariants=invariants)
