"""LiteRT's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` for Keras-compatible LSTMs.

``export_litert(..., fused_lstm=True)`` traces every ``Feedback`` layer that
computes exactly Keras's ``LSTM`` (``problem`` says which do) as the function
that the converter's ``prepare-composite-functions`` pass replaces with the
fused op (TF 2.21, ``CheckFusableKerasLstm`` and ``ConvertKerasLSTMLayer``),
Keras 2's convention for its ``LSTM``:

- the function has the attribute ``api_implements="lstm_<unique id>"`` and
  the supportive attributes ``time_major`` and ``go_backwards`` (a backwards
  layer gets a REVERSE_V2 of its inputs in front of the op);
- its arguments are ``(inputs, init_h, init_c, kernel, recurrent_kernel,
  bias)``, ranked, the states and weights of static shape: the file has a
  fixed batch size; its results are five, of which only the first two (the
  last output, the whole sequence) may be used: the converter returns zeros
  for the final states.

The body traced here is the layer's own recurrence (the reference engine);
the converter throws it away. The converter's frozen-graph path deletes
``api_implements`` before it inlines functions, so the file is converted
from a SavedModel of the traced function. The op has no mask input, its
states must be constants (they become LiteRT variable tensors, which the op
updates in place and which keep their values from one invoke to the next
until the interpreter's ``reset_all_variables()``), and LiteRT's 16x8
quantizer does not support it. A layer that is called with a mask or initial
states runs the usual WHILE loop in the same file.
"""

import contextlib
import shutil
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_feedback import activations
from keras_feedback import engine as engines
from keras_feedback._checks import check_bool
from keras_feedback.cores import LSTMCore
from keras_feedback.export import _common
from keras_feedback.export import _trace
from keras_feedback.layers._feedback import Feedback
from keras_feedback.layers._feedback_loop import nested_layers

FUSED_LSTM_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"


def check_option(fused_lstm, batch_size, streaming, quantization):
    """Raises unless ``fused_lstm`` and ``batch_size`` are valid together."""
    check_bool("fused_lstm", fused_lstm)
    if batch_size is not None:
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(
                f"Argument `batch_size` must be a positive integer or None, got "
                f"{batch_size!r}"
            )
        if not fused_lstm:
            raise ValueError(
                f"Argument `batch_size`={batch_size!r} applies to fused_lstm=True "
                "only (the fused op's states have a fixed batch); the WHILE-loop "
                "file keeps a dynamic batch. Pass fused_lstm=True, or no "
                "batch_size."
            )
    if not fused_lstm:
        return
    if streaming:
        raise ValueError(
            "Argument `fused_lstm`=True applies to the whole-sequence model, "
            "not to streaming=True: the step model has no loop to fuse"
        )
    if quantization == "int16x8":
        raise ValueError(
            "Argument `fused_lstm`=True cannot be combined with "
            "quantization='int16x8': LiteRT's 16x8 quantizer has no kernel for "
            f"{FUSED_LSTM_OP} ('Quantization to 16x8-bit not yet supported'). "
            "Use quantization='int8', or the step model (streaming=True)."
        )


def problem(layer):
    """Why ``layer`` cannot run as the fused op, or None when it can (by its
    configuration; a call with a mask or initial states cannot either)."""
    if type(layer) is not Feedback:
        return "not a keras_feedback.layers.Feedback layer"
    cell, spec = layer.cell, layer.cell.spec
    differences = [
        f"{name}={value!r}"
        for name, value, keras_value in [
            # Any LSTMCore (unit_forget_bias only changes the initial bias).
            ("core", "lstm" if type(spec.core) is LSTMCore else cell.core, "lstm"),
            ("feedback_units", spec.feedback_units, 0),
            ("output_units", spec.output_units, None),
            ("attention", spec.attention, False),
            ("residual", spec.residual, False),
            ("layer_norm", spec.layer_norm, False),
            ("memory_attention", getattr(spec, "memory_attention", None), None),
            ("input_feeding", getattr(spec, "input_feeding", False), False),
            ("return_state", layer.return_state, False),
            ("return_trace", layer.return_trace, False),
            ("stateful", layer.stateful, False),
        ]
        if value != keras_value
    ]
    for slot, keras_activation in [
        ("activation", keras.activations.tanh),
        ("recurrent_activation", keras.activations.sigmoid),
    ]:
        if getattr(cell, slot) is not keras_activation:
            name = activations.serialize(getattr(cell, slot))
            differences.append(f"{slot}={name!r}")
    if layer.compute_dtype != "float32":
        differences.append(f"compute dtype {layer.compute_dtype}")
    if differences:
        return (
            "the fused op computes Keras's LSTM (core='lstm', feedback_units=0, "
            "tanh and sigmoid, no attention, output_units, residual, layer "
            "norm, return_state or stateful, float32); this layer has "
            + ", ".join(differences)
        )
    return None


class FusedFeedback(Feedback):
    """``Feedback`` whose calls without mask and initial states, on a fixed
    batch, are traced as the function the converter fuses; export only
    (``fused_model``). ``fused`` records, per call, None (fused) or why not.
    """

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        object.__setattr__(self, "fused", [])

    def call(
        self,
        sequences,
        initial_state=None,
        mask=None,
        training=False,
        memory=None,
        memory_mask=None,
    ):
        why = None
        if mask is not None:
            why = "it is called with a mask, which the fused op does not take"
        elif initial_state is not None:
            why = "it is called with initial states (the fused op's are constants)"
        elif memory is not None:
            why = "it is called with a memory"
        elif sequences.shape[0] is None:
            why = "its batch size is not fixed"
        elif sequences.shape[1] == 0:
            why = "its sequences have no steps"
        self.fused.append(why)
        if why is not None:
            return super().call(
                sequences,
                initial_state=initial_state,
                mask=mask,
                training=training,
                memory=memory,
                memory_mask=memory_mask,
            )
        cell = self.cell
        sequences = self._cast_inputs(sequences)
        dtype = self.compute_dtype
        zeros = tf.zeros([sequences.shape[0], cell.units], dtype)
        width = 4 * cell.units
        bias = cell.bias.value if cell.use_bias else tf.zeros([width], dtype)
        last, outputs, _, _, _ = self._fused_function()(
            sequences,
            zeros,
            zeros,
            tf.convert_to_tensor(cell.kernel.value),
            tf.convert_to_tensor(cell.recurrent_kernel.value),
            tf.convert_to_tensor(bias),
        )
        return outputs if self.return_sequences else last

    def _fused_function(self):
        cell = self.cell
        go_backwards = self.go_backwards

        def keras_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
            weights = {"kernel": kernel, "recurrent_kernel": recurrent_kernel}
            if cell.use_bias:
                weights["bias"] = bias
            outputs, last, states, _ = engines.run(
                _common.EXPORT_ENGINE,
                cell.recurrence(),
                {"weights": weights},
                inputs,
                [init_h, init_c],
                go_backwards=go_backwards,
                return_sequences=True,
            )
            return last, outputs, states[0], states[1], tf.zeros([])

        # A unique name per call: the converter pairs each call with its
        # function by it (Keras 2 does the same).
        return tf.function(
            keras_lstm,
            autograph=False,
            experimental_attributes={
                "api_implements": f"lstm_{uuid.uuid4()}",
                "time_major": False,
                "go_backwards": go_backwards,
            },
        )


def _fused_layer(layer):
    if problem(layer) is None:
        return FusedFeedback.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def fused_model(model):
    """A copy of ``model`` (same weights) whose Keras-compatible LSTM layers
    are ``FusedFeedback``, and the other ``Feedback`` layers with why not."""
    copy = _trace.cloned_model(model, _fused_layer)
    others = [
        (layer, problem(layer))
        for layer in nested_layers(model)
        if isinstance(layer, Feedback) and problem(layer) is not None
    ]
    return copy, others


def file_batch(plan, batch_size):
    """The fixed batch of the fused file: ``batch_size``, else the model's
    own (its inputs' static batch), else 1."""
    batches = {tuple(t.shape)[0] for t in _trace.flat_leaves(plan.model.inputs)} - {
        None
    }
    if batch_size is not None:
        if batches and batches != {int(batch_size)}:
            raise ValueError(
                f"Argument `batch_size`={batch_size!r} differs from the fixed "
                f"batch size {sorted(batches)} of the model's inputs"
            )
        return int(batch_size)
    return batches.pop() if len(batches) == 1 else 1


def concrete_function(plan, batch):
    """The whole-sequence function of ``plan`` on a fixed ``batch``."""
    specs = {
        name: tf.TensorSpec((batch,) + tuple(spec.shape[1:]), spec.dtype, name=name)
        for name, spec in plan.input_specs.items()
    }
    with _common.export_mode(plan.model):
        function = tf.function(
            plan.sequence_fn, input_signature=[specs], autograph=False
        )
        return function.get_concrete_function()


def fused_calls(model):
    """``(fused, not fused)``: the ``FusedFeedback`` layers of ``model`` whose
    traced calls were fused, and ``(layer, why)`` for those that were not."""
    fused, unfused = [], []
    for layer in nested_layers(model):
        if isinstance(layer, FusedFeedback):
            for why in layer.fused:
                if why is None:
                    fused.append(layer)
                else:
                    unfused.append((layer, why))
    return fused, unfused


@contextlib.contextmanager
def saved_model_converter(model, function):
    """A converter of ``function`` read from a SavedModel (kept for the
    block): the path that keeps ``api_implements``."""
    folder = tempfile.mkdtemp(prefix="keras_feedback_fused_")
    try:
        holder = tf.Module()
        # The tf.Variables themselves (a Keras variable saves as an object
        # the converter does not freeze).
        holder.variables_of_model = [v.value for v in model.variables]
        tf.saved_model.save(holder, folder, signatures={_trace_signature(): function})
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=[_trace_signature()]
        )
        # Freeze every variable (the model's weights are read only).
        converter.experimental_enable_resource_variables = False
        yield converter
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _trace_signature():
    from keras_feedback.export import _saved_model

    return _saved_model.SERVING_DEFAULT


def rebatched(samples, batch):
    """Calibration batches as batches of ``batch`` rows: each batch of the
    representative data cut in ``batch`` rows, the last filled with its
    first rows again (the fused file takes its fixed batch only)."""
    result = []
    for sample in samples:
        rows = next(iter(sample.values())).shape[0]
        for start in range(0, rows, batch):
            take = np.arange(start, start + batch) % rows
            result.append({name: value[take] for name, value in sample.items()})
    return result


def check_signature(content, key, input_names, output_names):
    """Raises unless the converter wrote signature ``key`` with exactly
    those input and output names."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(content, 0)
    found = {}
    for i in range(root.SignatureDefsLength()):
        signature = root.SignatureDefs(i)
        found[signature.SignatureKey().decode()] = (
            sorted(
                signature.Inputs(j).Name().decode()
                for j in range(signature.InputsLength())
            ),
            sorted(
                signature.Outputs(j).Name().decode()
                for j in range(signature.OutputsLength())
            ),
        )
    expected = (sorted(input_names), sorted(output_names))
    if found.get(key) != expected:
        raise ValueError(
            f"The fused LiteRT conversion wrote the signatures {found}, expected "
            f"{key!r} with inputs and outputs {expected}; this is a bug of "
            "keras_feedback: please report it"
        )


def describe_unfused(unfused):
    """``(layer, why)`` pairs as text, one clause per layer."""
    return "; ".join(f"Feedback {layer.name!r}: {why}" for layer, why in unfused)
