"""The one batch check of everything a call receives besides its inputs.

Initial states, a memory and its mask, ``Equilibrium``'s starting point and
a stateful layer's stored states must have one row per input row. A batch
that does not fit is refused, never broadcast: with a ``ValueError`` while
tracing where both batch sizes are known, and by an assertion in the graph
(``InvalidArgumentError``, the same words with the sizes after them) where
one is not (a ``None`` batch: ``fit``, ``predict``, a ``tf.function``).
"""

import tensorflow as tf


def batch_words(what, against="the inputs"):
    """The words of a batch mismatch, with ``{rows}`` (the tensor's batch
    size) and ``{batch}`` (the inputs') to fill in."""
    return (
        f"{what} has batch size {{rows}}, {against} have batch size {{batch}}: "
        "expected one row per input row"
    )


def batch_checked(what, tensor, reference, check=True, words=None):
    """``tensor``, checked to have as many rows (first axis) as ``reference``.

    Args:
        what: what the message names (``"Argument `initial_state`[0] (h)"``).
        tensor: the tensor to check.
        reference: the inputs, or their batch size (an int or scalar tensor).
        check: add the in-graph assertion where a batch size is unknown
            (False in a pure, exported call: LiteRT has no builtin for it).
        words: the message, with ``{rows}`` and ``{batch}`` fields and no
            other braces; by default ``batch_words(what)``.
    """
    words = batch_words(what) if words is None else words
    rows = tensor.shape[0]
    scalar = isinstance(reference, int) or (
        tf.is_tensor(reference) and reference.shape.rank == 0
    )
    if not scalar:
        batch = reference.shape[0]
    elif isinstance(reference, int):
        batch = reference
    else:
        batch = tf.get_static_value(reference)
        batch = None if batch is None else int(batch)
    if rows is not None and batch is not None:
        if rows != batch:
            raise ValueError(words.format(rows=rows, batch=batch))
        return tensor
    if not check:
        return tensor
    batch_size = tf.cast(reference, tf.int32) if scalar else tf.shape(reference)[0]
    rows_size = tf.shape(tensor)[0]
    # The sizes follow the words as data, not formatted in: StringFormat has
    # no XLA kernel (a decoder compiled with XLA calls `step`), and an
    # Assert under XLA is compiled away.
    text = words.format(rows="R", batch="B") + "; with R, B ="
    assertion = tf.debugging.Assert(
        tf.equal(rows_size, batch_size), [text, rows_size, batch_size]
    )
    with tf.control_dependencies([assertion]):
        return tf.identity(tensor)
