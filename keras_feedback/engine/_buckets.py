"""Padding time to buckets, to bound XLA recompilations."""

import tensorflow as tf


def pad_time(sequences, multiple, mask=None):
    """Pads the time axis of ``sequences`` up to a multiple of ``multiple``.

    XLA compiles the fused engine's loops once per distinct input shape
    ``(batch, time)``. Padding time to a multiple of ``multiple`` (with a mask
    that hides the padding) makes every length in ``(k - 1) * multiple + 1 ..
    k * multiple`` share one compilation. Masked steps keep the state and the
    output, so the padded run returns what the unpadded one returns (with
    ``go_backwards`` too: the padding is then processed first, and skipped).

    Args:
        sequences: ``(batch, time, features)`` tensor.
        multiple: positive int, the bucket width.
        mask: optional ``(batch, time)`` boolean mask of the real steps.

    Returns:
        ``(padded, mask)``: ``(batch, padded_time, features)`` and the
        ``(batch, padded_time)`` boolean mask, False on the padding.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(
            f"Argument `multiple` must be a positive integer, got {multiple!r}"
        )
    sequences = tf.convert_to_tensor(sequences)
    if sequences.shape.rank != 3:
        raise ValueError(
            "Argument `sequences` must have rank 3 (batch, time, features), got "
            f"shape {tuple(sequences.shape)}"
        )
    shape = tf.shape(sequences)
    time = shape[1]
    padding = (multiple - time % multiple) % multiple
    if mask is None:
        mask = tf.ones(shape[:2], tf.bool)
    mask = tf.cast(mask, tf.bool)
    padded = tf.pad(sequences, [[0, 0], [0, padding], [0, 0]])
    mask = tf.pad(mask, [[0, 0], [0, padding]], constant_values=False)
    return padded, mask


MIN_BUCKET = 8


def check_buckets(value):
    """``time_buckets`` as the layers take it: ``"auto"``, None, or a list."""
    if value is None or value == "auto":
        return value
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            if list(value) == sorted(set(value)):
                return list(value)
    raise ValueError(
        "Argument `time_buckets` must be 'auto' (lengths padded to the next power "
        f"of two, at least {MIN_BUCKET}), None (no padding) or an increasing list "
        f"of positive lengths, got {value!r}"
    )


def bucket_length(time, buckets):
    """The padded length of ``time`` steps (an int32 scalar tensor).

    ``"auto"``: the next power of two, at least ``MIN_BUCKET``; a list: its
    smallest entry ``>= time``, or ``time`` itself beyond the largest.
    """
    time = tf.cast(time, tf.int32)
    if buckets == "auto":
        v = tf.maximum(time, MIN_BUCKET) - 1  # exact next power of two
        for shift in (1, 2, 4, 8, 16):
            v = tf.bitwise.bitwise_or(v, tf.bitwise.right_shift(v, shift))
        return v + 1
    table = tf.constant(buckets, tf.int32)
    index = tf.searchsorted(table, tf.reshape(time, [1]), side="left")[0]
    inside = index < len(buckets)
    return tf.where(inside, tf.gather(table, tf.minimum(index, len(buckets) - 1)), time)


def pad_to_bucket(inputs, mask, buckets):
    """``(padded inputs, mask, time)``: time padded to its bucket, the padding
    masked (masked steps keep state and output, so the real steps' results
    do not change); ``time`` is the caller's length, to slice back."""
    time = tf.shape(inputs)[1]
    padding = bucket_length(time, buckets) - time
    if mask is None:
        mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
    rank = inputs.shape.rank
    inputs = tf.pad(inputs, [[0, 0], [0, padding]] + [[0, 0]] * (rank - 2))
    mask = tf.pad(tf.cast(mask, tf.bool), [[0, 0], [0, padding]])
    return inputs, mask, time


def unpad(sequences, time, go_backwards):
    """The caller's ``time`` steps of padded ``(B, T_bucket, ...)`` results,
    which are in processing order: with ``go_backwards`` the padding (the end
    of the sequence) was processed first."""
    if sequences is None:
        return None
    if go_backwards:
        return sequences[:, tf.shape(sequences)[1] - time :]
    return sequences[:, :time]
