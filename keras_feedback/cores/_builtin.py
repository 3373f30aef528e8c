"""The built-in cores: Keras's SimpleRNN, GRU (both forms) and LSTM updates.

With ``feedback_units=0`` and no extras, a ``Feedback`` layer with one of
them computes exactly what ``keras.layers.SimpleRNN``, ``GRU`` and ``LSTM``
compute, with the same weights in the same layout.
"""

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback._checks import check_bool
from keras_feedback.cores._base import Core
from keras_feedback.cores._base import Weight


def _recurrent_kernel(units, width):
    return Weight("recurrent_kernel", ("linear", units, width), "recurrent")


def _scaled(term, scale):
    """``term`` times the gated-feedback stack's ``candidate_scale``."""
    return term if scale is None else scale * term


@public("keras_feedback.cores.SimpleCore")
class SimpleCore(Core):
    """Elman's update, Keras's ``SimpleRNNCell``:
    ``h_t = activation(z_t + h_{t-1} U)``."""

    alias = "simple"

    def weights(self, units):
        return (_recurrent_kernel(units, units), Weight("bias", (units,), "bias"))

    def update(self, ops, projected, states, candidate_term=None, candidate_scale=None):
        pre = projected + _scaled(ops.product("recurrent_kernel"), candidate_scale)
        if candidate_term is not None:
            pre = pre + candidate_term
        return [ops.down(ops.activation(ops.up(pre)))]

    def deferred(self):
        return (("recurrent_kernel", True),)


@public("keras_feedback.cores.GRUCore")
class GRUCore(Core):
    """The GRU update of Keras's ``GRUCell`` (gates ``z, r, h`` in that
    order).

    ``reset_after=True`` (Keras's default, cuDNN's form): the reset gate
    multiplies ``h_{t-1} U_h + b_{rh}``, with a bias of shape ``(2, 3H)``
    (input and recurrent parts). ``reset_after=False`` (Cho et al. 2014,
    Keras's other form): it multiplies ``h_{t-1}`` before ``U_h``, with one
    bias ``(3H,)``.
    """

    alias = "gru"

    def __init__(self, reset_after: bool = True):
        self.reset_after = check_bool("reset_after", reset_after)

    def width(self, units):
        return 3 * units

    def weights(self, units):
        bias = (2, 3 * units) if self.reset_after else (3 * units,)
        return (_recurrent_kernel(units, 3 * units), Weight("bias", bias, "bias"))

    def input_bias(self, params):
        bias = params.get("bias")
        if bias is None or not self.reset_after:
            return bias
        return bias[0]

    def update(self, ops, projected, states, candidate_term=None, candidate_scale=None):
        h_prev = states[0]
        x_z, x_r, x_h = tf.split(projected, 3, axis=-1)
        if self.reset_after:
            recurrent = ops.product("recurrent_kernel")
            if candidate_scale is not None:
                # The gate scales U_h h_{t-1}, not the recurrent bias.
                r_z, r_r, r_h = tf.split(recurrent, 3, axis=-1)
                recurrent = tf.concat([r_z, r_r, candidate_scale * r_h], axis=-1)
            if "bias" in ops.params:
                recurrent = recurrent + ops.params["bias"][1]
            r_z, r_r, r_h = tf.split(recurrent, 3, axis=-1)
            z = ops.recurrent_activation(ops.up(x_z + r_z))
            r = ops.recurrent_activation(ops.up(x_r + r_r))
            inner = (
                ops.up(r_h) if candidate_term is None else ops.up(r_h + candidate_term)
            )
            candidate = ops.activation(ops.up(x_h) + r * inner)
            return [ops.down(z * ops.up(h_prev) + (1 - z) * candidate)]
        kernel = ops.params["recurrent_kernel"]
        units = kernel.shape[-1] // 3
        r_zr = ops.linear(ops.recurrent_input, kernel[..., : 2 * units])
        r_z, r_r = tf.split(r_zr, 2, axis=-1)
        z = ops.recurrent_activation(ops.up(x_z + r_z))
        r = ops.recurrent_activation(ops.up(x_r + r_r))
        r_h = ops.linear(ops.down(r) * ops.recurrent_input, kernel[..., 2 * units :])
        pre = ops.up(x_h + _scaled(r_h, candidate_scale))
        if candidate_term is not None:
            # The layer-above term is reset-gated in both forms.
            pre = pre + r * ops.up(candidate_term)
        candidate = ops.activation(pre)
        return [ops.down(z * ops.up(h_prev) + (1 - z) * candidate)]

    def deferred(self):
        return (("recurrent_kernel", False),) if self.reset_after else ()

    def get_config(self):
        return {"reset_after": self.reset_after}


@public("keras_feedback.cores.LSTMCore")
class LSTMCore(Core):
    """The LSTM update of Keras's ``LSTMCell`` (gates ``i, f, g, o``; the
    states ``h`` and the cell state ``carry``).

    ``unit_forget_bias=True`` initialises the forget gate's bias to ones
    (Jozefowicz et al. 2015), as Keras does.
    """

    alias = "lstm"
    state_names = ("h", "carry")

    def __init__(self, unit_forget_bias: bool = True):
        self.unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)

    def width(self, units):
        return 4 * units

    def weights(self, units):
        initializer = None
        if self.unit_forget_bias:

            def initializer(init):
                def forget_ones(shape, dtype=None):
                    return keras.ops.concatenate(
                        [
                            init((units,), dtype=dtype),
                            keras.initializers.get("ones")((units,), dtype=dtype),
                            init((2 * units,), dtype=dtype),
                        ]
                    )

                return forget_ones

        return (
            _recurrent_kernel(units, 4 * units),
            Weight("bias", (4 * units,), "bias", initializer),
        )

    def update(self, ops, projected, states, candidate_term=None, candidate_scale=None):
        _, carry = states
        recurrent = ops.product("recurrent_kernel")
        if candidate_scale is not None:
            r_i, r_f, r_g, r_o = tf.split(recurrent, 4, axis=-1)
            recurrent = tf.concat([r_i, r_f, candidate_scale * r_g, r_o], axis=-1)
        # One split (its gradient is one concatenation) rather than four slices.
        z_i, z_f, z_g, z_o = tf.split(ops.up(projected + recurrent), 4, axis=-1)
        if candidate_term is not None:
            z_g = z_g + ops.up(candidate_term)
        i = ops.recurrent_activation(z_i)
        f = ops.recurrent_activation(z_f)
        g = ops.activation(z_g)
        o = ops.recurrent_activation(z_o)
        new_carry = f * ops.up(carry) + i * g
        return [ops.down(o * ops.activation(new_carry)), ops.down(new_carry)]

    def deferred(self):
        return (("recurrent_kernel", True),)

    def get_config(self):
        return {"unit_forget_bias": self.unit_forget_bias}
