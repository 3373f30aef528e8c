"""Fail early, and clearly, when Keras runs on another backend."""

import os


def _error(backend):
    return ImportError(
        "keras_feedback needs the TensorFlow backend of Keras 3, but Keras is "
        f"set to the {backend!r} backend. Set KERAS_BACKEND=tensorflow (or "
        '"backend": "tensorflow" in ~/.keras/keras.json) before importing '
        "keras or keras_feedback."
    )


def require_tensorflow_backend():
    # Checked before importing keras: another backend may not even import
    # here (its own dependencies missing), which would hide the real cause.
    requested = os.environ.get("KERAS_BACKEND")
    if requested and requested != "tensorflow":
        raise _error(requested)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise _error(keras.backend.backend())
