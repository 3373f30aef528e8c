"""Quantization-aware training (QAT) for int8 LiteRT files that keep their
accuracy (see the guide, docs/quantization.md)."""

from keras_feedback.quantization._qat import QATDense
from keras_feedback.quantization._qat import UpdateRanges
from keras_feedback.quantization._qat import is_quantized
from keras_feedback.quantization._qat import quantize_model
from keras_feedback.quantization._qat import strip
from keras_feedback.quantization._qat import update_ranges

__all__ = [
    "QATDense",
    "UpdateRanges",
    "is_quantized",
    "quantize_model",
    "strip",
    "update_ranges",
]
