"""The one decorator that makes a symbol public.

``@public("keras_feedback.layers.Feedback")`` records the symbol under its public
path and registers it for Keras serialization (``package="keras_feedback"``), so
nobody has to remember the second step. The namespace ``__init__`` files import
the symbols explicitly; ``tests/test_api.py`` checks that the two agree.
"""

import keras

PACKAGE = "keras_feedback"

# public path -> symbol, filled as the implementation modules are imported.
PUBLIC_SYMBOLS = {}


def public(path, serializable=None):
    """Export ``symbol`` as ``path`` and register it for Keras serialization.

    Args:
        path: the full public path, e.g. ``"keras_feedback.layers.Feedback"``.
        serializable: register with ``keras.saving.register_keras_serializable``.
            Defaults to True for classes, False for functions (helpers such as
            ``activations.get`` are not objects that get saved).
    """
    if not path.startswith(PACKAGE + "."):
        raise ValueError(f"public path must start with '{PACKAGE}.', got {path!r}")
    name = path.rsplit(".", 1)[1]

    def decorator(symbol):
        register = isinstance(symbol, type) if serializable is None else serializable
        if register:
            keras.saving.register_keras_serializable(package=PACKAGE, name=name)(symbol)
        PUBLIC_SYMBOLS[path] = symbol
        return symbol

    return decorator
