"""``EncoderDecoder``: an encoder model and an attention decoder's step, as
decoding and export take them."""

from typing import Any
from typing import Optional

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.seq2seq import _decoding


@public("keras_feedback.seq2seq.EncoderDecoder", serializable=False)
class EncoderDecoder:
    """An encoder and a step-by-step attention decoder, for decoding and
    serving.

    The encoder is a Keras model ``source -> [memory, memory_mask, *states]``:
    the memory ``(batch, memory_time, features)`` the decoder attends over,
    its boolean mask ``(batch, memory_time)`` (False at padding), and the
    decoder's initial states in the order of ``decoder.state_names`` (only
    the states for a decoder without memory attention). The decoder is the
    ``Feedback`` layer (with ``memory_attention``, trained in a
    teacher-forced model that shares its layers with the encoder), between
    the token ``embedding`` and the ``projection`` to the vocabulary's
    logits. ``keras_feedback.export.export_seq2seq_saved_model`` and
    ``export_seq2seq_litert`` serve it.

    Args:
        encoder: the encoder ``keras.Model``.
        decoder: the decoder's ``keras_feedback.layers.Feedback`` layer.
        embedding: the target tokens' embedding layer, or None when the
            decoder takes token ids as they are.
        projection: the layer from the decoder's output to the logits, or
            None when the decoder's outputs are the logits.
        start_token: the token fed at the first step.
        end_token: the token that ends an output.

    Example:

    >>> import keras, numpy as np
    >>> from keras_feedback import seq2seq
    >>> from keras_feedback.layers import Feedback
    >>> source = keras.Input((None, 3))
    >>> memory = Feedback(4, feedback_units=0, return_sequences=True)(source)
    >>> mask = keras.ops.ones_like(memory[..., 0]) > 0
    >>> decoder = Feedback(4, feedback_units=0, memory_attention="dot")
    >>> encoder = keras.Model(source, [memory, mask, memory[:, -1], memory[:, -1]])
    >>> embedding, projection = keras.layers.Embedding(5, 2), keras.layers.Dense(5)
    >>> _ = projection(decoder(embedding(np.zeros((1, 1))), memory=np.zeros((1, 2, 4))))
    >>> model = seq2seq.EncoderDecoder(
    ...     encoder, decoder, embedding, projection, start_token=1, end_token=0)
    >>> model.greedy_decode(np.zeros((2, 6, 3)), max_length=4).tokens.shape
    TensorShape([2, 4])
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: Any,
        embedding: Optional[Any] = None,
        projection: Optional[Any] = None,
        *,
        start_token: int,
        end_token: int,
    ):
        from keras_feedback.layers import Feedback

        if not isinstance(encoder, keras.Model):
            raise TypeError(
                f"Argument `encoder` must be a keras.Model, got {encoder!r}"
            )
        if not isinstance(decoder, Feedback):
            raise TypeError(
                "Argument `decoder` must be a keras_feedback.layers.Feedback layer, "
                f"got {decoder!r}"
            )
        self.attends = bool(decoder.cell.memory_attention)
        names = (["memory", "memory_mask"] if self.attends else []) + list(
            decoder.state_names
        )
        if len(encoder.outputs) != len(names):
            raise ValueError(
                f"Argument `encoder` must output [{', '.join(names)}] "
                f"({len(names)} tensors: the decoder's states in order"
                + (", after the memory and its mask" if self.attends else "")
                + f"), got {len(encoder.outputs)} outputs"
            )
        _decoding.check_token("start_token", start_token)
        _decoding.check_token("end_token", end_token)
        self.encoder = encoder
        self.decoder = decoder
        self.embedding = embedding
        self.projection = projection
        self.start_token = start_token
        self.end_token = end_token
        self.step_fn = _decoding.layer_step(decoder, embedding, projection)

    def encode(self, source: Any):
        """``(states, context)`` of ``source``: the decoder's initial states
        and ``{"memory": ..., "memory_mask": ...}`` (``{}`` without memory
        attention)."""
        outputs = self.encoder(source, training=False)
        outputs = [outputs] if tf.is_tensor(outputs) else list(outputs)
        if not self.attends:
            return outputs, {}
        memory, memory_mask, *states = outputs
        memory_mask = tf.cast(memory_mask, tf.bool)
        return states, {"memory": memory, "memory_mask": memory_mask}

    def step(self, tokens: Any, states: Any, context: Any):
        """One decoder step: ``(logits, new_states)`` of the previous tokens."""
        return self.step_fn(tf.convert_to_tensor(tokens), states, context)

    def _decode(self, decoder, source, **options):
        states, context = self.encode(source)
        return decoder(
            self.step_fn,
            states,
            context=context,
            start_token=self.start_token,
            end_token=self.end_token,
            **options,
        )

    def greedy_decode(self, source: Any, max_length: int) -> _decoding.DecodeResult:
        """``seq2seq.greedy_decode`` of ``source``."""
        return self._decode(_decoding.greedy_decode, source, max_length=max_length)

    def beam_search(
        self,
        source: Any,
        max_length: int,
        beam_width: int,
        length_penalty_weight: float = 0.0,
    ) -> _decoding.DecodeResult:
        """``seq2seq.beam_search`` of ``source``."""
        return self._decode(
            _decoding.beam_search,
            source,
            max_length=max_length,
            beam_width=beam_width,
            length_penalty_weight=length_penalty_weight,
        )

    def sample(
        self, source: Any, max_length: int, **options: Any
    ) -> _decoding.DecodeResult:
        """``seq2seq.sample`` of ``source`` (``temperature``, ``top_k``,
        ``top_p``, ``seed``)."""
        return self._decode(_decoding.sample, source, max_length=max_length, **options)
