"""Quantisation options and int8 calibration of a LiteRT conversion."""

import warnings

import numpy as np
import tensorflow as tf

from keras_feedback.export import _common
from keras_feedback.export import _trace

QUANTIZATIONS = ("float16", "dynamic_range", "int8", "int16x8")
# The modes calibrated on representative data.
CALIBRATED = ("int8", "int16x8")
# int16x8 is calibrated on the representative data and on the same steps
# with the model's (float) inputs scaled by INT16_INPUT_HEADROOM and the
# states by INT16_STATE_HEADROOM: fresh inputs go beyond the extremes of a
# finite sample (the input projections then saturate), and a residual state
# beyond the range it reached in calibration, where int16 affords the
# headroom (1-2 of 15 bits); the states' headroom is smaller because a wider
# range costs the precision a growing residual state needs (the errors with
# and without it: docs/deploy.md, "Measurements behind the code", D1).
INT16_INPUT_HEADROOM = 4.0
INT16_STATE_HEADROOM = 2.0
# Calibration batches (time steps) fed to the int8 quantizer at most; longer
# representative data is subsampled evenly.
_MAX_CALIBRATION_BATCHES = 512


def check_quantization(quantization, representative_data, qat=False):
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantization` must be None or one of {QUANTIZATIONS}, "
            f"got {quantization!r}"
        )
    if qat:
        if quantization != "int8":
            raise ValueError(
                f"Argument `quantization`={quantization!r}: the model is "
                "quantization-aware (keras_feedback.quantization), and its "
                "LiteRT file is int8: pass quantization='int8', or export "
                "keras_feedback.quantization.strip(model) in float"
            )
        return  # representative_data is optional: only checked
    if representative_data is not None and quantization not in CALIBRATED:
        raise ValueError(
            "Argument `representative_data` calibrates quantization='int8' or "
            f"'int16x8' only, and would be ignored with quantization="
            f"{quantization!r}: pass representative_data=None, or one of the "
            f"calibrated quantizations {CALIBRATED}"
        )
    if quantization in CALIBRATED and representative_data is None:
        raise ValueError(
            "Argument `representative_data` is required for "
            f"quantization={quantization!r} (full integer quantization "
            "calibrates the range of every tensor on it), got None"
        )


def _calibration_batches(plan, representative_data):
    """``representative_data`` as a list of batches of named sequences."""
    if callable(representative_data):
        batches = list(representative_data())
    else:
        batches = [representative_data]
    if not batches:
        raise ValueError("Argument `representative_data` holds no data")
    named = [plan.named_inputs(b, argument="representative_data") for b in batches]
    for batch in named:
        for name, value in batch.items():
            expected = "(batch >= 1, time >= 1" + (", ...)" if value.ndim > 2 else ")")
            if value.ndim < 2 or not value.shape[0] or not value.shape[1]:
                raise ValueError(
                    f"Argument `representative_data`: input {name!r} has shape "
                    f"{value.shape}, which holds no time step to calibrate "
                    f"on; expected shape {expected}"
                )
            if np.issubdtype(value.dtype, np.floating) and not np.all(
                np.isfinite(value)
            ):
                raise ValueError(
                    f"Argument `representative_data`: input {name!r} (shape "
                    f"{value.shape}) holds NaN or infinite values, which give "
                    "no range to calibrate; expected finite values"
                )
    return named


def with_headroom(samples, names):
    """``samples`` and the same samples with their float inputs ``names``
    and the states scaled (``INT16_*_HEADROOM``)."""
    scaled = []
    for sample in samples:
        row = {}
        for name, value in sample.items():
            factor = INT16_INPUT_HEADROOM if name in names else INT16_STATE_HEADROOM
            if np.issubdtype(value.dtype, np.floating):
                value = value * np.asarray(factor, value.dtype)
            row[name] = value
        scaled.append(row)
    return samples + scaled


def step_samples(plan, representative_data):
    """Calibration inputs of the step model: each step of each sequence with
    the states the model itself reaches there."""
    step = tf.function(plan.step_fn, input_signature=plan.signature("step"))
    samples = []
    with _common.export_mode(plan.model):
        for named in _calibration_batches(plan, representative_data):
            batch = next(iter(named.values())).shape[0]
            start = plan.initial_state_fn({_trace.BATCH_SIZE: batch})
            states = {name: start[name] for name in plan.state_specs}
            samples += _common.stream(step, named, states, record=True).inputs
    stride = -(-len(samples) // _MAX_CALIBRATION_BATCHES)
    return samples[::stride]


def sequence_samples(plan, representative_data):
    """Calibration inputs of the whole-sequence model: the batches as given."""
    batches = _calibration_batches(plan, representative_data)
    return batches[:: -(-len(batches) // _MAX_CALIBRATION_BATCHES)]


# The ops a whole-sequence int8 model keeps in float32 (see below).
_INT8_SEQUENCE_FLOAT_OPS = ("SCATTER_ND", "CONCATENATION", "SELECT", "SELECT_V2")


def quantize_sequence_int8(converter, samples, names):
    """The whole-sequence model in int8, but the ops that only move data.

    The recurrence writes each step's output into the output sequence with
    ``tf.tensor_scatter_nd_update``, which LiteRT runs as SCATTER_ND ops on a
    one-hot mask. An int8 SCATTER_ND fills the positions it does not write
    with the integer 0, which is the real 0 only for a zero point of 0; the
    quantizer gives the mask (values in [0, 1]) the zero point -128, so the
    mask reads 0.5 where it should read 0 and every write halves the outputs
    written before (measured: only the last step survived, relative error
    about 1). Those ops only move data: in float32 they cost no precision.
    The MLIR quantizer (the calibration quantizer does not support WHILE)
    also requires one scale for all the inputs of a concatenation or a
    select (masked steps keep their states), which the fixed output scales
    of tanh and sigmoid do not share: those ops stay float32 too. The
    quantizer's op denylist is reached through the public
    ``tf.lite.experimental.QuantizationDebugger``.
    """

    def dataset():
        return ([sample[name] for name in names] for sample in samples)

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(_INT8_SEQUENCE_FLOAT_OPS)
        ),
    )
    return debugger.get_nondebug_quantized_model()


# A representative batch may pass a QAT model's range by this fraction of its
# width before ``check_ranges`` warns.
RANGE_SLACK = 0.1


def check_ranges(model, representative_data):
    """Warns when ``representative_data`` drives a quantised tensor of a
    quantization-aware ``model`` out of the range it trained with (by more
    than ``RANGE_SLACK`` of its width): the int8 file clips it there."""
    from keras_feedback.quantization import _qat

    beyond = []
    for layer, low, high in _qat._observed(model, representative_data, True):
        ranges = _qat._ranges_variable(layer).numpy()
        for row in _qat._rows(layer):
            lo, hi = ranges[row]
            slack = RANGE_SLACK * (hi - lo)
            if low[row] < lo - slack or high[row] > hi + slack:
                beyond.append(
                    f"{layer.name} point {row}: [{low[row]:.3g}, {high[row]:.3g}] "
                    f"beyond [{lo:.3g}, {hi:.3g}]"
                )
    if beyond:
        warnings.warn(
            "Argument `representative_data` goes beyond the int8 ranges the "
            f"quantization-aware model trained with ({'; '.join(beyond[:5])}"
            f"{'; ...' if len(beyond) > 5 else ''}): the LiteRT file clips "
            "there. Fine-tune on such data, or move the ranges with "
            "keras_feedback.quantization.update_ranges",
            stacklevel=3,
        )
