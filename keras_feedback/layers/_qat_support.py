"""The feedback cell's side of quantization-aware training: its argument
``quantization`` checked, its quantisation points found and their ranges'
weight made (the step math's side is ``cells/_fake_quant.py``; the public
API, ``keras_feedback.quantization``)."""

import dataclasses

import numpy as np

from keras_feedback import cores
from keras_feedback.cells import _fake_quant
from keras_feedback.cells import _feedback_math as math

QUANTIZATIONS = ("int8",)
# The activations with an int8 LiteRT kernel the fake quantisation models.
ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")
BUILTIN_CORES = (cores.SimpleCore, cores.GRUCore, cores.LSTMCore, cores.IndRNNCore)
RANGES = "quantization_ranges"


def activation_name(activation):
    return getattr(activation, "__name__", None)


def check(cell, quantization):
    """``quantization`` if the cell can train with it; marks the cell's
    spec quantised (its points are found at build)."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantization` must be None or one of {QUANTIZATIONS}, "
            f"got {quantization!r}"
        )
    problems = []
    if type(cell.core_object) not in BUILTIN_CORES:
        problems.append(
            f"core={cell.core_object!r} (a user core or a Keras cell: its ops "
            "are not known to have int8 kernels; use a built-in core)"
        )
    if cell.memory_attention:
        problems.append(f"memory_attention={cell.memory_attention!r}")
    if cell.layer_norm:
        problems.append("layer_norm=True")
    used = {
        "activation": True,
        "recurrent_activation": True,
        "feedback_activation": bool(cell.feedback_units),
        "output_activation": bool(cell.output_units),
    }
    for slot, is_used in used.items():
        name = activation_name(getattr(cell, slot))
        if is_used and name not in ACTIVATIONS:
            problems.append(f"{slot}={name or getattr(cell, slot)!r}")
    if problems:
        raise ValueError(
            f"Argument `quantization`={quantization!r} (quantization-aware "
            f"training) cannot take {'; '.join(problems)}. It supports the "
            f"built-in cores, the activations {ACTIVATIONS}, feedback, "
            "attention, residual and output units"
        )
    cell.spec = dataclasses.replace(cell.spec, quantization=_fake_quant.QuantSpec())
    return quantization


def build(cell):
    """Finds the cell's quantisation points and adds their ranges' weight
    ``quantization_ranges`` ``(points, 2)`` (not trainable)."""
    if cell.compute_dtype != "float32":
        raise ValueError(
            f"Argument `quantization`={cell.quantization!r} needs float32; the "
            f"layer computes in {cell.compute_dtype} (dtype policy "
            f"{cell.dtype_policy.name!r})"
        )
    shapes = {name: tuple(v.shape) for name, v in cell._param_variables().items()}
    shapes[RANGES] = (None, 2)
    spec = dataclasses.replace(cell.spec, quantization=None)
    quant = _fake_quant.discover(math.step, spec, shapes, spec.width, spec.state_size)
    cell.spec = dataclasses.replace(spec, quantization=quant)
    initial = quant.initial_ranges()
    cell.quantization_ranges = cell.add_weight(
        name=RANGES,
        shape=initial.shape,
        initializer=lambda shape, dtype=None: np.asarray(initial, dtype or "float32"),
        trainable=False,
    )
