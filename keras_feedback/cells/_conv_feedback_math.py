"""The step math of the convolutional feedback cell.

The cell is the feedback cell of ``_feedback_math`` on feature maps: every
matmul of its step is a stride-1 ``"same"`` convolution (``_feedback_math.linear``
convolves when a kernel is ``(kh, kw, in, out)``), so the gate arithmetic,
the feedback signal, the attention gate and the output readout are the same
code for both cells. Only the input projection differs: one convolution of
every time step at once, with the layer's strides, padding and dilation.

For state maps of ``height x width`` with ``F = filters``, ``Fc =
feedback_filters``, ``O = output_filters`` and ``G`` the core's width, the parameters
are those of ``_feedback_math`` with convolution kernels:

    kernel (kh, kw, C, G), the core's weights (a "linear" one is
    (kh, kw, in, out): recurrent_kernel (kh, kw, F, G) for the built-ins)
    feedback_recurrent_kernel (kh, kw, Fc, G)     U_c
    feedback_kernel (kh, kw, F, Fc), feedback_bias (Fc)   W_c, b_c
    attention_kernel (1, 1, F+Fc, F), attention_bias (F)  W_α, b_α (per pixel)
    output_kernel (1, 1, F+Fc, O), output_bias (O)        W_y, b_y (per pixel)
    layer_norm_gamma (F), layer_norm_beta (F)     over the channels of a pixel

The engines carry ``(batch, size)`` vectors: ``make_step_fn`` gives them a
step on flattened maps (``size = height * width * channels``), reshaped to
``(batch, height, width, channels)`` inside the step, which XLA and LiteRT
treat as free.
"""

import dataclasses
import functools
from typing import Tuple

import tensorflow as tf

from keras_feedback.cells import _feedback_math
from keras_feedback.engine._contract import Recurrence

PADDINGS = ("valid", "same")


@dataclasses.dataclass(frozen=True)
class ConvStepSpec:
    """Static description of a convolutional feedback cell.

    ``cell`` is the ``_feedback_math.StepSpec`` of the step (``units`` are
    the filters); ``height`` and ``width`` are those of the state maps.
    """

    cell: _feedback_math.StepSpec
    height: int
    width: int
    kernel_size: Tuple[int, int]
    strides: Tuple[int, int]
    padding: str
    dilation_rate: Tuple[int, int]

    @property
    def pixels(self):
        return self.height * self.width

    @property
    def state_channels(self):
        return list(self.cell.state_size)

    @property
    def state_size(self):
        """Flat sizes of the state tensors, in order: h, (carry), (c)."""
        return [self.pixels * n for n in self.cell.state_size]

    @property
    def output_channels(self):
        return self.cell.output_size

    @property
    def output_size(self):
        return self.pixels * self.cell.output_size

    @property
    def trace_channels(self):
        return dict(self.cell.trace_sizes)

    @property
    def trace_sizes(self):
        return {k: self.pixels * n for k, n in self.cell.trace_sizes.items()}


def conv_output_length(length, kernel, stride, dilation, padding):
    """Length of one spatial axis after the input convolution."""
    if padding == "same":
        return -(-length // stride)
    span = dilation * (kernel - 1) + 1
    return (length - span) // stride + 1


def project_inputs(spec, params, inputs):
    """The input convolution ``conv(x, W_x) + b`` (input part of the bias for gru).

    Args:
        spec: the ``ConvStepSpec``.
        params: dict of parameter tensors.
        inputs: ``(B, H, W, C)`` for one step, or ``(B, T, H, W, C)`` for all
            steps at once (convolved as one ``(B*T, H, W, C)`` batch).

    Returns:
        The projected maps, ``(B, h, w, G)`` or ``(B, T, h, w, G)``.
    """
    kernel = params["kernel"]
    sequence = inputs.shape.rank == 5
    maps = tf.reshape(inputs, [-1, *inputs.shape[-3:]]) if sequence else inputs
    # tf.nn.convolution, as Keras's Conv2D: a dilated convolution runs as
    # space-to-batch around a plain one, whose gradients every CPU kernel
    # has (Conv2DBackpropInput has none for dilation > 1 in float64).
    projected = tf.nn.convolution(
        maps,
        kernel,
        strides=spec.strides,
        padding=spec.padding.upper(),
        dilations=spec.dilation_rate,
    )
    # Conv2D returns its input's shape for an empty batch: say it.
    projected = tf.reshape(projected, [-1, spec.height, spec.width, kernel.shape[-1]])
    bias = _feedback_math.input_bias(spec.cell, params)
    if bias is not None:
        projected = projected + bias
    if sequence:
        lead = tf.shape(inputs)[:2]
        projected = tf.reshape(projected, tf.concat([lead, tf.shape(projected)[1:]], 0))
    return projected


def step(spec, params, projected, states, recurrent_mask=None):
    """One step on maps: ``_feedback_math.step`` with convolution kernels.

    Args:
        spec: the ``ConvStepSpec``.
        params: dict of parameter tensors (convolution kernels).
        projected: ``project_inputs`` of this step, ``(B, h, w, G)``.
        states: list of ``(B, h, w, channels)`` state maps.
        recurrent_mask: optional ``(B, h, w, F)`` recurrent dropout mask.

    Returns:
        ``(y, new_states, trace)`` as maps.
    """
    return _feedback_math.step(spec.cell, params, projected, states, recurrent_mask)


def to_maps(spec, flat, channels):
    """``(B, h*w*channels)`` -> ``(B, h, w, channels)``."""
    return tf.reshape(flat, [-1, spec.height, spec.width, channels])


def to_flat(maps):
    """``(..., h, w, channels)`` maps -> ``(..., h*w*channels)`` vectors."""
    size = maps.shape[-3] * maps.shape[-2] * maps.shape[-1]
    return tf.reshape(maps, tf.concat([tf.shape(maps)[:-3], [size]], 0))


@functools.cache
def make_recurrence(spec):
    """The ``Recurrence`` an engine runs for ``spec``, on flattened maps.

    The engine's params are ``{"weights": ..., "recurrent_mask": ...}`` (the
    mask, a ``(B, h, w, F)`` map, only when recurrent dropout is active); its
    inputs are ``project_inputs`` of the sequences, flattened. Cached, so an
    engine sees one recurrence per spec.
    """
    gate_channels = spec.cell.width

    def step_fn(params, projected, states, products=None):
        states = [to_maps(spec, s, n) for s, n in zip(states, spec.state_channels)]
        output, new_states, trace = step(
            spec,
            params["weights"],
            to_maps(spec, projected, gate_channels),
            states,
            params.get("recurrent_mask"),
        )
        # One reshape per distinct tensor: the output and the traces are often
        # the new states themselves, and the XLA engine's backward pass
        # stores one cotangent for results that are the same tensor.
        flat = {}

        def once(maps):
            if id(maps) not in flat:
                flat[id(maps)] = to_flat(maps)
            return flat[id(maps)]

        return (
            once(output),
            [once(s) for s in new_states],
            {k: once(v) for k, v in trace.items()},
        )

    return Recurrence(
        step=step_fn,
        output_size=spec.output_size,
        state_sizes=tuple(spec.state_size),
        trace_sizes=tuple(spec.trace_sizes.items()),
    )
