"""``IndRNNCore``: the independently recurrent neural network's update."""

from typing import Optional

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.cores._base import Core
from keras_feedback.cores._base import Weight


@public("keras_feedback.cores.IndRNNCore")
class IndRNNCore(Core):
    """IndRNN (Li et al., CVPR 2018): ``h_t = activation(z_t + u ⊙ h_{t-1})``.

    ``z_t = x_t W + b`` (plus ``c_{t-1} U_c`` with feedback); the recurrent
    weight ``u`` (``recurrent_kernel``, shape ``(units,)``) is elementwise,
    so a step costs ``O(units)`` (``O(units + feedback_units * units)`` with
    feedback) instead of ``O(units²)``. ReLU by default: with ``|u|`` kept
    near 1 the gradient neither vanishes nor explodes over long sequences.

    Args:
        recurrent_max_abs: None, or the largest ``|u|`` allowed (the paper
            uses ``2 ** (1 / T)`` for sequences of length ``T``): ``u`` is
            clipped to it after every training step (a Keras constraint on
            ``recurrent_kernel``) and initialised within it.
        recurrent_min_abs: None, or the smallest ``|u|`` allowed (the
            paper's ``0.5 ** (1 / T)`` for the last layer, so that it keeps
            its memory).

    ``u`` is initialised uniformly in ``[0, 1]`` (the paper's and its
    reference implementation's choice), narrowed to ``[recurrent_min_abs,
    recurrent_max_abs]``.

    Example:

    >>> import numpy as np
    >>> from keras_feedback import cores, layers
    >>> T = 100
    >>> layer = layers.Feedback(
    ...     8, feedback_units=0,
    ...     core=cores.IndRNNCore(recurrent_max_abs=2 ** (1 / T)))
    >>> layer(np.zeros((2, T, 3), "float32")).shape
    TensorShape([2, 8])

    Reference:
        Li, Li, Cook, Zhu, Gao, "Independently Recurrent Neural Network
        (IndRNN): Building A Longer and Deeper RNN", CVPR 2018.
    """

    alias = "indrnn"
    default_activation = "relu"

    def __init__(
        self,
        recurrent_max_abs: Optional[float] = None,
        recurrent_min_abs: Optional[float] = None,
    ):
        for name, value in (
            ("recurrent_max_abs", recurrent_max_abs),
            ("recurrent_min_abs", recurrent_min_abs),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value <= 0
            ):
                raise ValueError(
                    f"Argument `{name}` must be a positive number or None, got {value!r}"
                )
        if (
            recurrent_max_abs is not None
            and recurrent_min_abs is not None
            and recurrent_min_abs > recurrent_max_abs
        ):
            raise ValueError(
                f"Argument `recurrent_min_abs`={recurrent_min_abs!r} is larger than "
                f"`recurrent_max_abs`={recurrent_max_abs!r}: expected min <= max"
            )
        self.recurrent_max_abs = (
            None if recurrent_max_abs is None else float(recurrent_max_abs)
        )
        self.recurrent_min_abs = (
            None if recurrent_min_abs is None else float(recurrent_min_abs)
        )

    def weights(self, units):
        low = self.recurrent_min_abs or 0.0
        high = (
            1.0 if self.recurrent_max_abs is None else min(1.0, self.recurrent_max_abs)
        )
        high = max(high, low)

        def initializer(_):
            return keras.initializers.RandomUniform(low, high)

        constraint = None
        if self.recurrent_max_abs is not None or self.recurrent_min_abs is not None:
            constraint = AbsRange(self.recurrent_min_abs, self.recurrent_max_abs)
        return (
            Weight("recurrent_kernel", (units,), "recurrent", initializer, constraint),
            Weight("bias", (units,), "bias"),
        )

    def update(self, ops, projected, states, candidate_term=None, candidate_scale=None):
        recurrent = ops.params["recurrent_kernel"] * ops.recurrent_input
        if candidate_scale is not None:
            recurrent = candidate_scale * recurrent
        pre = projected + recurrent
        if candidate_term is not None:
            pre = pre + candidate_term
        return [ops.down(ops.activation(ops.up(pre)))]

    def get_config(self):
        return {
            "recurrent_max_abs": self.recurrent_max_abs,
            "recurrent_min_abs": self.recurrent_min_abs,
        }


@public("keras_feedback.cores.AbsRange")
class AbsRange(keras.constraints.Constraint):
    """Keeps ``|w|`` in ``[min_abs, max_abs]``, each bound optional, signs
    kept (a weight at 0 goes to ``+min_abs``): ``IndRNNCore``'s constraint
    on its recurrent weight."""

    def __init__(
        self, min_abs: Optional[float] = None, max_abs: Optional[float] = None
    ):
        self.min_abs = min_abs
        self.max_abs = max_abs

    def __call__(self, w):
        magnitude = tf.abs(w)
        if self.max_abs is not None:
            magnitude = tf.minimum(magnitude, self.max_abs)
        if self.min_abs is not None:
            magnitude = tf.maximum(magnitude, self.min_abs)
        return tf.where(w < 0, -magnitude, magnitude)

    def get_config(self):
        return {"min_abs": self.min_abs, "max_abs": self.max_abs}
