"""Fail early, and clearly, when Keras runs on another backend."""

import os


def require_tensorflow_backend():
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            "keras_feedback needs the TensorFlow backend of Keras 3, but Keras "
            f"is running on the {backend!r} backend (KERAS_BACKEND="
            f"{os.environ.get('KERAS_BACKEND')!r}). Set KERAS_BACKEND=tensorflow "
            "before importing keras or keras_feedback."
        )
