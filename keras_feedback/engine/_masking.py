"""The masking rules of every recurrence, in one place.

A masked step (``keep`` false for a row) keeps that row's states; its output
repeats the previous step's output, or is zero with ``zero_output_for_mask``
(what ``Bidirectional`` asks for). The reference engine's loop and the
layers' public ``step`` apply these functions; the fused engine applies the
same rule inside its compiled loops.
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
