"""The step math of a stack of feedback cells run as one recurrence.

``FeedbackStack`` (in ``keras_feedback.layers``) runs ``L`` feedback cells
(``_feedback_math``) as one recurrence: one step function over every layer's
states, so that a layer can read the layers above it at ``t - 1``. Layer
``j`` reads the output ``y^{j-1}_t`` of the layer below (``x_t`` for the
bottom one); across layers (``top_down``):

- ``None``: nothing more, a plain stack of recurrent layers;
- ``"ungated"``: layer ``j``'s candidate also reads every other layer's
  ``h^i_{t-1}`` through its own ``U^{i->j}``;
- ``"gated"``: the gated-feedback RNN (Chung, Gulcehre, Cho, Bengio, ICML
  2015): each connection ``i -> j``, the layer's own included, is scaled by
  a scalar gate ``g^{i->j}_t = sigmoid(w_g^{i->j} . h^{j-1}_t + u_g^{i->j} .
  h*_{t-1})``, ``h*_{t-1}`` all layers' ``h_{t-1}`` concatenated.

The gated products, exactly (``Core.update``'s ``candidate_term`` and
``candidate_scale``): tanh core ``h^j_t = tanh(W h^{j-1}_t + Σ_i g^{i->j}
U^{i->j} h^i_{t-1})``; LSTM: the cell input ``tanh(W h^{j-1}_t + Σ_i g^{i->j}
U^{i->j} h^i_{t-1})``, its input, forget and output gates read their own
``h^j_{t-1}`` only; GRU: the candidate ``tanh(W h^{j-1}_t + r^j_t ⊙ Σ_i
g^{i->j} U^{i->j} h^i_{t-1})``, the reset and update gates reading their own
layer only. ``U^{j->j}`` is the core's own recurrent kernel (its candidate
part); the other layers' ``U^{i->j}`` are one kernel ``(Σ_{i≠j} H_i, H_j)``
per layer, ``top_down_kernel``, applied to those layers' ``h`` concatenated
in layer order.

Parameters: ``{"layers": [the cells' step params, ...], "stack": [per
layer: {"gate_kernel" (in_j, L), "gate_recurrent_kernel" (ΣH, L),
"top_down_kernel"}]}``. The bottom layer's input projection and its gate's
input part are one matmul, which the engine hoists out of the loop; the
upper layers project inside the step (their inputs are the step's own
results).
"""

import dataclasses
import functools
from typing import Optional
from typing import Tuple

import tensorflow as tf

from keras_feedback.cells import _feedback_math as cell_math
from keras_feedback.engine._contract import Recurrence

TOP_DOWN = (None, "ungated", "gated")


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """Static description of a stack: its layers' ``StepSpec`` and the
    connections across them."""

    layers: Tuple[cell_math.StepSpec, ...]
    top_down: Optional[str]
    return_all_layers: bool = False

    @property
    def depth(self):
        return len(self.layers)

    @property
    def units(self):
        return tuple(spec.units for spec in self.layers)

    def others(self, j):
        """The layers whose ``h_{t-1}`` reach layer ``j``'s
        ``top_down_kernel`` (all but ``j``), in order."""
        return [i for i in range(self.depth) if i != j]

    @property
    def connects(self):
        """Whether layers read other layers' ``h_{t-1}``."""
        return self.top_down is not None and self.depth > 1

    @property
    def state_counts(self):
        return tuple(len(spec.state_size) for spec in self.layers)

    @property
    def state_size(self):
        return [size for spec in self.layers for size in spec.state_size]

    @property
    def output_size(self):
        if self.return_all_layers:
            return sum(spec.output_size for spec in self.layers)
        return self.layers[-1].output_size

    @property
    def output_sizes(self):
        return [spec.output_size for spec in self.layers]

    @property
    def trace_sizes(self):
        """Each layer's trace under ``<name>_<layer>``; the gates of the
        gated stack under ``gate_<layer>`` (``L`` values: ``g^{i->j}`` for
        every ``i``)."""
        sizes = {}
        for j, spec in enumerate(self.layers):
            sizes.update({f"{k}_{j}": n for k, n in spec.trace_sizes.items()})
            if self.top_down == "gated":
                sizes[f"gate_{j}"] = self.depth
        return sizes


def split_states(spec, states):
    """Each layer's states, from the stack's flat list."""
    states, result = list(states), []
    for count in spec.state_counts:
        result.append(states[:count])
        del states[:count]
    return result


def project(spec, params, j, inputs, bias=True):
    """Layer ``j``'s input projection (of ``x`` for the bottom layer, of
    the layer below's output above it), followed in the gated stack by its
    gates' input part ``inputs W_g``: one matmul of ``(B, [T,] D)``."""
    layer = spec.layers[j]
    weights = params["layers"][j]
    if spec.top_down != "gated":
        return cell_math.project_inputs(layer, weights, inputs, bias=bias)
    kernel = tf.concat([weights["kernel"], params["stack"][j]["gate_kernel"]], -1)
    projected = cell_math.project_inputs(
        layer, {**weights, "kernel": kernel}, inputs, bias=False
    )
    if bias:
        projected = _add_input_bias(layer, weights, projected)
    return projected


def _add_input_bias(spec, weights, projected):
    bias = cell_math.input_bias(spec, weights)
    if bias is None:
        return projected
    extra = projected.shape[-1] - bias.shape[-1]  # the gates' input part
    if extra:
        bias = tf.concat([bias, tf.zeros([extra], bias.dtype)], 0)
    return projected + bias


def step(spec, params, projected, states, recurrent_masks=None):
    """One step of the stack: ``(y, new_states, trace)``.

    ``projected``: ``project`` (layer 0) of the step's input (bias included).
    ``recurrent_masks``: None, or a list with each layer's recurrent dropout
    mask (or None).
    """
    layer_states = split_states(spec, states)
    h_prev = [s[0] for s in layer_states]
    h_star = tf.concat(h_prev, -1) if spec.top_down == "gated" else None
    new_states, outputs, trace = [], [], {}
    below = None
    for j, layer in enumerate(spec.layers):
        x = projected if j == 0 else project(spec, params, j, below)
        weights = params["layers"][j]
        term = scale = None
        if spec.top_down == "gated":
            width = layer.width
            x, gate_input = x[..., :width], x[..., width:]
            gates = tf.sigmoid(
                gate_input
                + tf.matmul(h_star, params["stack"][j]["gate_recurrent_kernel"])
            )
            trace[f"gate_{j}"] = gates
            scale = gates[..., j : j + 1]
        if spec.connects:
            sources = []
            for i in spec.others(j):
                h = h_prev[i]
                if spec.top_down == "gated":
                    h = gates[..., i : i + 1] * h
                sources.append(h)
            term = tf.matmul(
                tf.concat(sources, -1), params["stack"][j]["top_down_kernel"]
            )
        mask = None if recurrent_masks is None else recurrent_masks[j]
        y, new, layer_trace = cell_math.step(
            layer,
            weights,
            x,
            layer_states[j],
            mask,
            candidate_term=term,
            candidate_scale=scale,
        )
        new_states.extend(new)
        outputs.append(y)
        trace.update({f"{k}_{j}": v for k, v in layer_trace.items()})
        below = y
    output = tf.concat(outputs, -1) if spec.return_all_layers else outputs[-1]
    return output, new_states, trace


def readout(spec, params, states):
    """The output the stack's states give (a step's output is a function of
    its new states)."""
    outputs = [
        cell_math.readout(layer, params["layers"][j], s)
        for j, (layer, s) in enumerate(zip(spec.layers, split_states(spec, states)))
    ]
    return tf.concat(outputs, -1) if spec.return_all_layers else outputs[-1]


@functools.cache
def make_recurrence(spec):
    """The ``Recurrence`` an engine runs for ``spec`` (cached per spec).

    The engine's params are ``{"weights": {"layers": [...], "stack":
    [...]}, "recurrent_mask_<j>": ...}``; the inputs are the sequences,
    projected by one matmul (the bottom layer's kernel and gate kernel)
    without the bias, which the step adds. No product is deferred: every
    recurrent product of the stack is computed in the step.
    """

    def step_fn(params, projected, states, products=None):
        weights = params["weights"]
        projected = _add_input_bias(spec.layers[0], weights["layers"][0], projected)
        masks = [params.get(f"recurrent_mask_{j}") for j in range(spec.depth)]
        return step(spec, weights, projected, states, masks)

    def project_fn(params, sequences):
        return project(spec, params["weights"], 0, sequences, bias=False)

    return Recurrence(
        step=step_fn,
        output_size=spec.output_size,
        state_sizes=tuple(spec.state_size),
        trace_sizes=tuple(spec.trace_sizes.items()),
        project=project_fn,
        deferred=(),
    )
