"""The step math of the feedback cell: pure functions of (params, inputs, state).

Nothing here owns a variable or knows about time. ``FeedbackCell`` (in
``keras_feedback.layers``) owns the weights and hands ``project_inputs`` and
``step`` to an engine, which runs them over a sequence. With
``feedback_units == 0`` the math is exactly Keras's ``SimpleRNNCell``,
``GRUCell`` (``reset_after=True``) and ``LSTMCell``.

For hidden size H, feedback size F, gate count G (1, 3, 4 for simple, gru,
lstm) the parameters are:

    kernel (D, G*H), recurrent_kernel (H, G*H), bias (G*H) or (2, G*H) for gru
    feedback_recurrent_kernel (F, G*H)       U_c: c_{t-1} into the core
    feedback_kernel (H, F), feedback_bias (F)      W_c, b_c
    attention_kernel (H+F, H), attention_bias (H)  W_α, b_α
    output_kernel (H+F, O), output_bias (O)        W_y, b_y
    layer_norm_gamma (H), layer_norm_beta (H)
    activation, recurrent_activation, feedback_activation, output_activation:
        for a parametric activation only, the dict of its tensors
        (``keras_feedback.activations.ParametricActivation``); the spec then
        holds its ``PureActivation``, called as ``pure(params[slot], x)``

Every matmul of ``step`` goes through ``linear``, which convolves instead when
a kernel is a convolution kernel ``(kh, kw, in, out)``: the convolutional cell
(``_conv_feedback_math``) is this same step on ``(B, H, W, C)`` maps.
"""

import dataclasses
import functools
from typing import Callable
from typing import Optional

import tensorflow as tf

from keras_feedback.activations._learnable import PureActivation
from keras_feedback.engine._contract import Deferred
from keras_feedback.engine._contract import Recurrence

CORES = ("simple", "gru", "lstm")
GATES = {"simple": 1, "gru": 3, "lstm": 4}
LAYER_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static description of a feedback cell: everything that is not a tensor."""

    core: str
    units: int
    feedback_units: int
    output_units: Optional[int]
    attention: bool
    residual: bool
    layer_norm: bool
    use_bias: bool
    activation: Callable
    recurrent_activation: Callable
    feedback_activation: Callable
    output_activation: Callable

    @property
    def gates(self):
        return GATES[self.core]

    @property
    def state_size(self):
        """Sizes of the state tensors, in order: h, (LSTM carry), (feedback c)."""
        sizes = [self.units]
        if self.core == "lstm":
            sizes.append(self.units)
        if self.feedback_units:
            sizes.append(self.feedback_units)
        return sizes

    @property
    def output_size(self):
        return self.output_units or self.units

    @property
    def trace_sizes(self):
        """Per-step quantities recorded by ``return_trace``: name -> size."""
        sizes = {"h": self.units}
        if self.feedback_units:
            sizes["c"] = self.feedback_units
        if self.attention:
            sizes["alpha"] = self.units
        return sizes


def input_bias(spec, params):
    """The bias of the input projection (its input part for gru), or None."""
    if not spec.use_bias:
        return None
    return params["bias"][0] if spec.core == "gru" else params["bias"]


def project_inputs(spec, params, inputs, bias=True):
    """The input projection ``x W_x + b`` (input part of the bias for gru).

    Works for one step ``(B, D)`` or all steps at once ``(B, T, D)``: the
    engine calls it once, before the loop, as one large matmul. ``bias=False``
    leaves ``b`` out (the engine's step then adds it, see ``make_step_fn``).
    """
    kernel = params["kernel"]
    if inputs.shape.rank == 2:
        projected = tf.matmul(inputs, kernel)
    else:
        # One (B*T, D) x (D, G) matmul: the fastest form, and a plain
        # FULLY_CONNECTED op after LiteRT conversion.
        lead = tf.shape(inputs)[:-1]
        flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
        projected = tf.reshape(
            tf.matmul(flat, kernel), tf.concat([lead, tf.shape(kernel)[-1:]], 0)
        )
    if bias and spec.use_bias:
        projected = projected + input_bias(spec, params)
    return projected


def linear(x, kernel):
    """``x`` times a dense kernel ``(in, out)``; or, for a convolution kernel
    ``(kh, kw, in, out)``, its stride-1 ``"same"`` convolution of the
    channels-last maps ``x``."""
    if kernel.shape.rank == 4:
        maps = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        # Conv2D returns its input's shape for an empty batch: say it.
        return tf.reshape(maps, tf.concat([tf.shape(x)[:-1], kernel.shape[-1:]], 0))
    return tf.matmul(x, kernel)


def _layer_norm(spec, params, x):
    # Half precision normalises in float32; float32 and float64 in their own.
    dtype = x.dtype
    x32 = tf.cast(x, tf.float32) if dtype in (tf.float16, tf.bfloat16) else x
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    normed = (x32 - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON)
    normed = tf.cast(normed, dtype)
    return normed * params["layer_norm_gamma"] + params["layer_norm_beta"]


def _split_states(spec, states):
    states = list(states)
    h = states.pop(0)
    carry = states.pop(0) if spec.core == "lstm" else None
    c = states.pop(0) if spec.feedback_units else None
    return h, carry, c


def _product(params, products, name, x):
    """``linear(x, params[name])``, or the engine's ``products[name]``."""
    if products is not None and name in products:
        return products[name]
    return linear(x, params[name])


def _core(spec, params, projected, h_prev, carry, recurrent_input, products=None):
    """The core update ``f``; returns (candidate h, new LSTM carry or None)."""
    recurrent = _product(params, products, "recurrent_kernel", recurrent_input)
    if spec.core == "simple":
        return spec.activation(projected + recurrent), None
    if spec.core == "gru":
        if spec.use_bias:
            recurrent = recurrent + params["bias"][1]
        x_z, x_r, x_h = tf.split(projected, 3, axis=-1)
        r_z, r_r, r_h = tf.split(recurrent, 3, axis=-1)
        z = spec.recurrent_activation(x_z + r_z)
        r = spec.recurrent_activation(x_r + r_r)
        candidate = spec.activation(x_h + r * r_h)
        return z * h_prev + (1 - z) * candidate, None
    # One split (its gradient is one concatenation) rather than four slices.
    z_i, z_f, z_g, z_o = tf.split(projected + recurrent, 4, axis=-1)
    i = spec.recurrent_activation(z_i)
    f = spec.recurrent_activation(z_f)
    g = spec.activation(z_g)
    o = spec.recurrent_activation(z_o)
    new_carry = f * carry + i * g
    return o * spec.activation(new_carry), new_carry


ACTIVATION_SLOTS = (
    "activation",
    "recurrent_activation",
    "feedback_activation",
    "output_activation",
)


def bind_activations(spec, params):
    """``spec`` with each ``PureActivation`` bound to ``params[slot]``.

    A parametric activation's tensors travel in the params, under its slot
    name, so that the step stays a pure function of its arguments.
    """
    bound = {
        slot: functools.partial(getattr(spec, slot), params[slot])
        for slot in ACTIVATION_SLOTS
        if isinstance(getattr(spec, slot), PureActivation)
    }
    return dataclasses.replace(spec, **bound) if bound else spec


def step(spec, params, projected, states, recurrent_mask=None, products=None):
    """One time step of the feedback cell.

    Args:
        spec: the cell's ``StepSpec``.
        params: dict of parameter tensors (names in the module docstring).
        projected: ``project_inputs`` of this step's input, ``(B, G*H)``.
        states: list of state tensors, sizes ``spec.state_size``.
        recurrent_mask: optional ``(B, H)`` recurrent dropout mask applied to
            ``h_{t-1}`` where it enters the recurrent matmul.
        products: optional dict kernel name -> the product the step would
            compute with it (``U h_{t-1}``, ``U_c c_{t-1}``), supplied by an
            engine instead (see ``make_step_fn``).

    Returns:
        ``(y, new_states, trace)``: the output ``(B, output_size)``, the new
        state list, and a dict of the per-step ``h``, ``c``, ``alpha``.
    """
    spec = bind_activations(spec, params)
    h_prev, carry, c_prev = _split_states(spec, states)
    if spec.feedback_units:
        projected = projected + _product(
            params, products, "feedback_recurrent_kernel", c_prev
        )
    recurrent_input = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    h, new_carry = _core(
        spec, params, projected, h_prev, carry, recurrent_input, products
    )
    if spec.layer_norm:
        h = _layer_norm(spec, params, h)
    if spec.residual:
        h = h_prev + h
    new_states = [h] if new_carry is None else [h, new_carry]
    c = None
    if spec.feedback_units:
        c = linear(h, params["feedback_kernel"])
        if spec.use_bias:
            c = c + params["feedback_bias"]
        c = spec.feedback_activation(c)
        new_states.append(c)
    output, trace = _readout(spec, params, h, c)
    return output, new_states, trace


def readout(spec, params, states):
    """The output ``y`` that the states ``(h, [carry], [c])`` a step returned
    give: a step's output is a function of its new states alone."""
    spec = bind_activations(spec, params)
    h, _, c = _split_states(spec, states)
    return _readout(spec, params, h, c)[0]


def _readout(spec, params, h, c):
    """``(y, trace)`` of the new ``h`` and feedback ``c`` (None without)."""
    trace = {"h": h}
    readout = h
    if c is not None:
        trace["c"] = c
        readout = tf.concat([h, c], axis=-1)
    output = h
    if spec.attention:
        alpha = linear(readout, params["attention_kernel"])
        if spec.use_bias:
            alpha = alpha + params["attention_bias"]
        alpha = tf.sigmoid(alpha)
        trace["alpha"] = alpha
        output = alpha * h
        readout = output if c is None else tf.concat([output, c], axis=-1)
    if spec.output_units:
        output = linear(readout, params["output_kernel"])
        if spec.use_bias:
            output = output + params["output_bias"]
        output = spec.output_activation(output)
    return output, trace


@functools.cache
def make_recurrence(spec, project=True):
    """The ``Recurrence`` an engine runs for ``spec`` (cached per spec).

    The engine's params are ``{"weights": ..., "recurrent_mask": ...}`` (the
    mask only when recurrent dropout is active). ``project=True``: the
    engine's inputs are the sequences, projected by one matmul without the
    bias, which the step adds (a bias added to the whole ``(B, T, G)``
    projection would be a second tensor of that size in the compiled
    backward pass); ``project=False``: the inputs are already projected,
    bias included (``project_inputs``).
    """

    def step_fn(params, projected, states, products=None):
        weights = params["weights"]
        if project and spec.use_bias:
            projected = projected + input_bias(spec, weights)
        return step(
            spec, weights, projected, states, params.get("recurrent_mask"), products
        )

    def project_fn(params, sequences):
        return project_inputs(spec, params["weights"], sequences, bias=False)

    return Recurrence(
        step=step_fn,
        output_size=spec.output_size,
        state_sizes=tuple(spec.state_size),
        trace_sizes=tuple(spec.trace_sizes.items()),
        project=project_fn if project else None,
        deferred=_deferred_linears(spec),
    )


def _deferred_linears(spec):
    """The step's linears of the previous states, which an engine may compute:
    ``U h_{t-1}`` and, with feedback, ``U_c c_{t-1}`` (see ``Deferred``)."""
    deferred = [
        Deferred(("weights", "recurrent_kernel"), _recurrent_input, spec.core != "gru")
    ]
    if spec.feedback_units:
        deferred.append(
            Deferred(("weights", "feedback_recurrent_kernel"), _feedback_input, True)
        )
    return tuple(deferred)


def _recurrent_input(params, states):
    h = states[0]
    mask = params.get("recurrent_mask")
    if mask is None:
        return h
    return h * (mask[:, None] if h.shape.rank == 3 else mask)


def _feedback_input(params, states):
    return states[-1]
