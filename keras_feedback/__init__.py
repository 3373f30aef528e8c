"""keras_feedback: feedback-recurrent layers for Keras 3 (TensorFlow backend).

The public API is what the namespace packages re-export:
``keras_feedback.layers``, ``keras_feedback.activations``,
``keras_feedback.datasets``, ``keras_feedback.export``,
``keras_feedback.quantization``, ``keras_feedback.seq2seq``,
``keras_feedback.training``.

``import keras_feedback`` imports them all (which registers the layers for
``.keras`` loading). The ``keras-feedback`` command alone starts without
them, so that ``--help`` and argument errors need no TensorFlow; it calls
``_load()`` before running a command.
"""

import importlib
import os
import sys

from keras_feedback.version import __version__

_NAMESPACES = (
    "activations",
    "cores",
    "datasets",
    "export",
    "layers",
    "quantization",
    "seq2seq",
    "training",
)
__all__ = ["__version__", *_NAMESPACES]


def _load():
    """Imports every namespace (TensorFlow and Keras with them), once."""
    from keras_feedback import _backend_check

    _backend_check.require_tensorflow_backend()
    for name in _NAMESPACES:
        importlib.import_module(f"keras_feedback.{name}")


def __getattr__(name):
    if name in _NAMESPACES:
        _load()
        return importlib.import_module(f"keras_feedback.{name}")
    raise AttributeError(f"module 'keras_feedback' has no attribute {name!r}")


def _started_by_the_command():
    # The console script's file is the __main__ module while it imports us.
    main = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main).split(".")[0] in ("keras-feedback",)


if not _started_by_the_command():
    _load()
