"""Serving an attention decoder: ``encode`` once, then ``step`` per token.

The server stays stateless: the client holds the memory and the decoder's
states between steps and feeds them back, as with the ``step`` signature of
``export_saved_model``. Both signatures are traced with the reference engine
(``_common.export_mode``): no XLA op and no must-compile function in the
graph.
"""

import os
from typing import Optional
from typing import Union

import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.export import _atomic
from keras_feedback.export import _common
from keras_feedback.export import _litert
from keras_feedback.export import _saved_model

ENCODE = "encode"
STEP = "step"
TOKENS = "tokens"
MEMORY = "memory"
MEMORY_MASK = "memory_mask"
LOGITS = "logits"


def _check(model):
    from keras_feedback.seq2seq import EncoderDecoder

    if not isinstance(model, EncoderDecoder):
        raise TypeError(
            "Argument `model` must be a keras_feedback.seq2seq.EncoderDecoder, "
            f"got {type(model).__name__}"
        )
    if not model.attends:
        raise ValueError(
            "Argument `model`: its decoder has no memory attention; export its "
            "training model with export_saved_model (the `step` signature)"
        )
    return model


def state_names(model):
    """The signature names of the decoder's states: ``state_<name>``."""
    return [f"state_{name}" for name in model.decoder.state_names]


def _source_spec(model):
    (source,) = model.encoder.inputs if len(model.encoder.inputs) == 1 else (None,)
    if source is None:
        raise ValueError(
            "Argument `model`: its encoder must have one input (the source), got "
            f"{len(model.encoder.inputs)}"
        )
    shape = (None, *source.shape[1:])
    return tf.TensorSpec(shape, source.dtype, name="source")


def _step_specs(model):
    decoder = model.decoder
    dtype = tf.float32  # exported graphs compute in float32 (export_mode)
    specs = {
        TOKENS: tf.TensorSpec([None], tf.int32, name=TOKENS),
        MEMORY: tf.TensorSpec(
            [None, None, decoder.cell.memory_features], dtype, name=MEMORY
        ),
        MEMORY_MASK: tf.TensorSpec([None, None], tf.bool, name=MEMORY_MASK),
    }
    for name, shape in zip(state_names(model), decoder.cell.state_shapes):
        specs[name] = tf.TensorSpec([None, *shape], dtype, name=name)
    return specs


class _Functions:
    """The two functions of a served ``EncoderDecoder``."""

    def __init__(self, model):
        self.model = model
        self.states = state_names(model)

    def encode(self, inputs):
        states, context = self.model.encode(inputs["source"])
        outputs = {MEMORY: tf.cast(context[MEMORY], tf.float32)}
        outputs[MEMORY_MASK] = context[MEMORY_MASK]
        for name, state in zip(self.states, states):
            outputs[name] = tf.cast(state, tf.float32)
        return outputs

    def step(self, inputs):
        states = [inputs[name] for name in self.states]
        context = {MEMORY: inputs[MEMORY], MEMORY_MASK: inputs[MEMORY_MASK]}
        logits, new_states = self.model.step(inputs[TOKENS], states, context)
        outputs = {LOGITS: tf.cast(logits, tf.float32)}
        for name, state in zip(self.states, new_states):
            outputs[name] = tf.cast(state, tf.float32)
        return outputs


def _layers(model):
    parts = [model.encoder, model.decoder, model.embedding, model.projection]
    return [part for part in parts if part is not None]


@public("keras_feedback.export.export_seq2seq_saved_model")
def export_seq2seq_saved_model(
    model,
    directory: Union[str, os.PathLike],
    version: int = 1,
    overwrite: bool = False,
) -> str:
    """Exports an attention decoder (``seq2seq.EncoderDecoder``) for TF Serving.

    Writes ``<directory>/<version>/`` with the signatures:

    - ``encode``: ``{"source": (batch, time, ...)}`` -> ``{"memory": (batch,
      memory_time, features), "memory_mask": (batch, memory_time) bool,
      "state_<name>": ...}``, the decoder's initial states by
      ``decoder.state_names`` (``state_h``, ``state_c``, ...);
    - ``step``: ``{"tokens": (batch,) int32, "memory", "memory_mask",
      "state_<name>", ...}`` -> ``{"logits": (batch, vocabulary),
      "state_<name>": ...}``: one decoder step. The client keeps the memory
      and feeds the new states back; a greedy decode is ``encode`` once,
      then ``step`` with the argmax of the last logits until the end token.

    The graph computes in float32 with the reference engine (no XLA op);
    versions are written atomically as by ``export_saved_model``.

    Args:
        model: a ``keras_feedback.seq2seq.EncoderDecoder``.
        directory: the model's base folder (TF Serving's ``base_path``).
        version: positive int, the version folder.
        overwrite: replace an existing version (atomically).

    Returns:
        The path of the version folder.
    """
    model = _check(model)
    directory, target = _saved_model.version_target(directory, version, overwrite)
    functions = _Functions(model)
    module = tf.Module()
    module.layers = _layers(model)
    with _common.export_mode(model.encoder):
        signatures = {
            ENCODE: tf.function(
                functions.encode,
                input_signature=[{"source": _source_spec(model)}],
                autograph=False,
            ).get_concrete_function(),
            STEP: tf.function(
                functions.step, input_signature=[_step_specs(model)], autograph=False
            ).get_concrete_function(),
        }
    return _saved_model.write_version(
        directory,
        target,
        lambda staging: tf.saved_model.save(module, staging, signatures=signatures),
    )


@public("keras_feedback.export.export_seq2seq_litert")
def export_seq2seq_litert(
    model,
    path: Union[str, os.PathLike],
    quantization: Optional[str] = None,
    overwrite: bool = False,
) -> str:
    """Exports an attention decoder's ``step`` as a LiteRT file.

    The file's one signature, ``step``, has the inputs and outputs of the
    SavedModel's ``step`` (``export_seq2seq_saved_model``), builtin ops only,
    dynamic batch and memory length. The encoder is a model of its own:
    export it with ``export_litert`` (whole sequences), or run it where the
    source is.

    Args:
        model: a ``keras_feedback.seq2seq.EncoderDecoder``.
        path: the ``.tflite`` file to write (atomically).
        quantization: None (float32), ``"float16"`` (weights stored as
            float16) or ``"dynamic_range"`` (int8 weights).
        overwrite: replace an existing file (atomically); without it an
            existing ``path`` is refused, as by ``export_litert``.

    Returns:
        The path written.
    """
    model = _check(model)
    if quantization not in (None, "float16", "dynamic_range"):
        raise ValueError(
            "Argument `quantization` must be None, 'float16' or 'dynamic_range' "
            f"for a decoder step, got {quantization!r}"
        )
    path = os.fspath(path)
    _common.check_target(path, overwrite, "path")
    functions = _Functions(model)
    module = tf.Module()
    module.layers = _layers(model)
    with _common.export_mode(model.encoder):
        function = tf.function(
            functions.step, input_signature=[_step_specs(model)], autograph=False
        ).get_concrete_function()
        converter = _litert.make_converter(function, module)
        _litert.configure(converter, function, quantization, None, streaming=True)
        content = converter.convert()
    # The frozen conversion path writes no signature: name it "step".
    _atomic.write_file(path, _litert.finished(content, quantization, function, STEP))
    return path
