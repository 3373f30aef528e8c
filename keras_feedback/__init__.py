"""keras_feedback: feedback-recurrent layers for Keras 3 (TensorFlow backend).

The public API is what the namespace packages re-export:
``keras_feedback.layers``, ``keras_feedback.activations``.
"""

from keras_feedback import _backend_check
from keras_feedback.version import __version__

_backend_check.require_tensorflow_backend()

from keras_feedback import activations  # noqa: E402
from keras_feedback import datasets  # noqa: E402
from keras_feedback import export  # noqa: E402
from keras_feedback import layers  # noqa: E402
from keras_feedback import training  # noqa: E402

__all__ = ["__version__", "activations", "datasets", "export", "layers", "training"]
