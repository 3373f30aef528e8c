"""The masking rules of every recurrence, in one place.

A masked step (``keep`` false for a row) keeps that row's states; its output
repeats the previous step's output, or is zero with ``zero_output_for_mask``
(what ``Bidirectional`` asks for). Both engines' loops and the layers'
public ``step`` apply these functions; the fused engine's reverse-time loop
applies ``split``, their transpose. ``zero_masked`` zeroes what a masked
step reads before any engine sees it, so that padding (NaN, Inf, garbage)
reaches neither an output nor a gradient.
"""

import tensorflow as tf


def keep(keep, new, old):
    """``new`` where ``keep`` (a ``(B, 1)`` boolean), else ``old``, leafwise."""
    return tf.nest.map_structure(lambda n, o: tf.where(keep, n, o), new, old)


def output(keep, new, previous, zero_output_for_mask):
    """The output of a step: ``new`` where ``keep``, else ``previous`` (or
    zeros with ``zero_output_for_mask``)."""
    held = tf.zeros_like(new) if zero_output_for_mask else previous
    return tf.where(keep, new, held)


def split(keep, cotangents):
    """The transpose of ``keep``: ``(into, past)``, the cotangents of a
    step's results split, leafwise, into the part that enters the step
    (where ``keep``) and the part that passes a masked step unchanged."""
    into = tf.nest.map_structure(
        lambda g: tf.where(keep, g, tf.zeros_like(g)), cotangents
    )
    past = tf.nest.map_structure(
        lambda g: tf.where(keep, tf.zeros_like(g), g), cotangents
    )
    return into, past


def zero_masked(values, mask):
    """``values`` with zeros wherever ``mask`` is False.

    ``mask`` covers the leading axes of ``values`` (``(B, T)`` for sequences
    of any rank, ``(B,)`` for one step). A select, not a product: a NaN in a
    masked place gives a zero value and a zero gradient, where ``0 * NaN``
    would give NaN.
    """
    mask = tf.cast(mask, tf.bool)
    extra = values.shape.rank - mask.shape.rank
    mask = tf.reshape(mask, tf.concat([tf.shape(mask), [1] * extra], 0))
    return tf.where(mask, values, tf.zeros_like(values))
