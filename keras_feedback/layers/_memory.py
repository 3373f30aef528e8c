"""The memory attention plumbing of the recurrent layer base.

``MemoryCalls`` is a base of ``FeedbackRNN``: it checks the ``memory`` and
``memory_mask`` a call or ``step`` is given, adds the memory and its keys to
the engine's params, and turns the traced ``h`` into the attention weights
``return_trace`` gives. ``check_mask_shape`` and ``asserted_mask_shape`` are
the shape checks of a ``(batch, time)`` mask, the call's and the memory's.
"""

import tensorflow as tf

from keras_feedback.engine._masking import zero_masked
from keras_feedback.layers._batch import batch_checked

# (argument, axes, what it must fit) of the memory's mask.
_MEMORY_MASK = ("memory_mask", "batch, memory_time", "memory")


def check_mask_shape(argument, axes, what, mask_shape, reference_shape):
    """A ``ValueError`` unless ``mask_shape`` is 2-D and fits the first two
    axes of ``reference_shape`` (where both are known)."""
    mask_shape, reference_shape = tuple(mask_shape), tuple(reference_shape)
    expected = reference_shape[:2]
    if len(mask_shape) != 2 or not all(
        a is None or b is None or a == b for a, b in zip(mask_shape, expected)
    ):
        raise ValueError(
            f"Argument `{argument}` must have shape ({axes}) = {expected}, "
            f"matching the {what} of shape {reference_shape}, got {mask_shape}"
        )


def asserted_mask_shape(argument, axes, what, mask, reference):
    """``mask``, after an assertion in the graph that its shape is the first
    two axes of ``reference``'s, where a static shape leaves it open."""
    if None not in mask.shape and None not in reference.shape[:2]:
        return mask
    check = tf.debugging.assert_equal(
        tf.shape(mask),
        tf.shape(reference)[:2],
        message=f"Argument `{argument}` must have shape ({axes}) of the {what}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(mask)


class MemoryCalls:
    """The memory attention methods of ``FeedbackRNN``."""

    def _check_memory_shapes(self, memory_shape, memory_mask_shape):
        """A memory of shape ``(batch, memory_time, features)`` where the
        cell attends over one (and none where it does not), and a mask of
        ``(batch, memory_time)``."""
        attention = getattr(self.cell, "memory_attention", None)
        if memory_shape is None:
            if attention:
                raise ValueError(
                    f"Layer {self.name!r} has memory_attention={attention!r} "
                    "and was called without `memory`: pass the encoder's outputs "
                    "as `memory` (batch, memory_time, features)"
                )
            if memory_mask_shape is not None:
                raise ValueError("Argument `memory_mask` was given without `memory`")
            return
        memory_shape = tuple(memory_shape)
        if not attention:
            raise ValueError(
                f"Argument `memory` was given to layer {self.name!r}, which has "
                "no memory attention: build it with memory_attention='additive', "
                "'dot' or 'scaled_dot'"
            )
        features = self.cell.memory_features if self.cell.built else None
        if len(memory_shape) != 3 or memory_shape[-1] is None:
            raise ValueError(
                "Argument `memory` must have shape (batch, memory_time, features) "
                f"with a known feature size, got {memory_shape}"
            )
        if features is not None and memory_shape[-1] != features:
            raise ValueError(
                f"Argument `memory` must have shape (batch, memory_time, "
                f"{features}) (the feature size the layer was built for), got "
                f"{memory_shape}"
            )
        if memory_mask_shape is not None:
            check_mask_shape(*_MEMORY_MASK, memory_mask_shape, memory_shape)

    def _memory_params(self, params, memory, memory_mask, inputs=None, check=True):
        """``params`` with the memory (checked, compute dtype, one row per
        row of ``inputs``) and its keys, or as they are when the cell has no
        memory attention. ``check``: assert dynamic shapes in the graph."""
        if memory is None and not getattr(self.cell, "memory_attention", None):
            if memory_mask is not None:
                raise ValueError("Argument `memory_mask` was given without `memory`")
            return params
        if memory is not None and memory_mask is None:
            memory_mask = getattr(memory, "_keras_mask", None)
        memory = None if memory is None else self._cast_inputs(memory)
        if memory_mask is not None:
            memory_mask = tf.convert_to_tensor(memory_mask)
        self._check_memory_shapes(
            None if memory is None else memory.shape,
            None if memory_mask is None else memory_mask.shape,
        )
        if inputs is not None:
            memory = batch_checked("Argument `memory`", memory, inputs, check)
        if memory_mask is not None and check:
            memory_mask = asserted_mask_shape(*_MEMORY_MASK, memory_mask, memory)
            # Padding in the memory reaches no output or gradient.
            memory = zero_masked(memory, memory_mask)
        return self.cell.memory_params(params, memory, memory_mask)

    def _alignment(self, params, traces, mask):
        """The attention weights of every step ``(B, T, M)``, in processing
        order: those of the step's ``h`` (a masked step holds the last ones,
        zeros before any unmasked step, as the other traces)."""
        alignment = self.cell.memory_alignment(params, traces["h"])
        if mask is None:
            return alignment
        kept = tf.reverse(mask, [1]) if self.go_backwards else mask
        started = tf.cumsum(tf.cast(kept, tf.int32), axis=1) > 0
        return alignment * tf.cast(started, alignment.dtype)[..., None]
