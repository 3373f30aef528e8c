"""Export to SavedModel (TF Serving) and LiteRT, and verification of both.

``export_saved_model`` writes TF Serving's ``<dir>/<version>/`` layout with
the signatures ``serving_default`` (whole sequences), ``step`` (one time step,
states in and out) and ``initial_state``. ``export_litert`` writes a ``.tflite``
file with builtin ops only (dynamic batch and time, or the step model with
``streaming=True``; float16, dynamic-range or int8 quantisation).
``export_seq2seq_saved_model`` and ``export_seq2seq_litert`` serve an
attention decoder (``encode`` once, then ``step`` per token).
``verify_saved_model`` and ``verify_litert`` reload what was written, run it
and compare it with the Keras model through one ``ErrorTally`` (a NaN or Inf
in an output is an infinite error, never within tolerance; ``json_report``
writes a report as strict JSON); ``litert_ops`` lists a file's operators.
"""

from keras_feedback.export._common import ErrorTally
from keras_feedback.export._common import json_report
from keras_feedback.export._litert import export_litert
from keras_feedback.export._litert import litert_ops
from keras_feedback.export._litert import verify_litert
from keras_feedback.export._saved_model import export_saved_model
from keras_feedback.export._saved_model import verify_saved_model
from keras_feedback.export._seq2seq import export_seq2seq_litert
from keras_feedback.export._seq2seq import export_seq2seq_saved_model

__all__ = [
    "ErrorTally",
    "export_litert",
    "export_saved_model",
    "export_seq2seq_litert",
    "export_seq2seq_saved_model",
    "json_report",
    "litert_ops",
    "verify_litert",
    "verify_saved_model",
]
