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
