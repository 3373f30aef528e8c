"""The name <-> activation table behind ``keras_feedback.activations``.

The table starts as every activation ``keras.activations`` ships, under every
name Keras accepts for it (aliases such as ``swish`` included), read from the
public module at import time so a new Keras activation is picked up without a
change here. ``register_activation`` adds the library's own activations to the same
table (learnable ones are registered as classes: ``get(name)`` then returns a
fresh instance, which carries its own weights).
"""

import difflib
import functools
import inspect
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Union

import keras

from keras_feedback._api import public
from keras_feedback.activations import _derivatives

# An activation: a name, a callable (a learnable activation instance is one),
# or None (linear).
ActivationLike = Union[str, Callable, None]

# Helpers of `keras.activations` that are not activations.
_NOT_ACTIVATIONS = frozenset({"deserialize", "get", "serialize"})


def _keras_activations():
    table = {}
    for name in dir(keras.activations):
        if name.startswith("_") or name in _NOT_ACTIVATIONS:
            continue
        activation = getattr(keras.activations, name)
        if not inspect.isfunction(activation):
            continue
        try:
            resolved = keras.activations.get(name)
        except ValueError:
            continue
        if resolved is activation:
            table[name] = activation
    return table


# name -> activation (a function, or a class that `get` instantiates).
_ACTIVATIONS = _keras_activations()
# canonical name -> analytic derivative of an elementwise activation.
_DERIVATIVES = dict(_derivatives.DERIVATIVES)


def register_activation(name, activation, derivative=None):
    """Add ``activation`` to the table under ``name``.

    Args:
        name: the string ``get`` and ``serialize`` use for it.
        activation: a function, or a class (a learnable activation) that
            ``get(name)`` instantiates with no arguments.
        derivative: optional analytic derivative of an elementwise function,
            taking the same arguments as ``activation``.
    """
    if name in _ACTIVATIONS and _ACTIVATIONS[name] is not activation:
        raise ValueError(
            f"An activation is already registered as {name!r}: {_ACTIVATIONS[name]!r}."
        )
    _ACTIVATIONS[name] = activation
    if derivative is not None:
        _DERIVATIVES[name] = derivative


def builtin_names():
    """Every name ``keras.activations`` ships, aliases included, sorted."""
    return sorted(_keras_activations())


def names():
    """Every name ``get`` accepts, sorted."""
    return sorted(_ACTIVATIONS)


def _is_elementwise(activation):
    # Keras's non-elementwise activations (softmax, log_softmax, glu,
    # sparsemax) are exactly those that work along an `axis`.
    try:
        parameters = inspect.signature(activation).parameters
    except (TypeError, ValueError):
        return False
    return "axis" not in parameters


def elementwise_names():
    """The names of the elementwise activations in the table, sorted."""
    return [
        name
        for name in names()
        if inspect.isfunction(_ACTIVATIONS[name])
        and _is_elementwise(_ACTIVATIONS[name])
    ]


def _name_of(activation):
    """The canonical table name of ``activation``, or None."""
    matches = [n for n, a in _ACTIVATIONS.items() if a is activation]
    if not matches:
        return None
    own = getattr(activation, "__name__", None)
    return own if own in matches else sorted(matches)[0]


def _unknown_name_error(name):
    valid = names()
    close = difflib.get_close_matches(name.lower(), valid, n=5, cutoff=0.5)
    message = f"Unknown activation {name!r}."
    if close:
        message += " Did you mean: " + ", ".join(map(repr, close)) + "?"
    return ValueError(message + " Valid names: " + ", ".join(valid) + ".")


def _lookup(name):
    if name not in _ACTIVATIONS:
        raise _unknown_name_error(name)
    activation = _ACTIVATIONS[name]
    return activation() if isinstance(activation, type) else activation


def _type_error(value, what):
    return TypeError(
        f"Could not interpret {value!r} (of type {type(value).__name__}) as "
        f"{what}: expected None, an activation name (str), a config dict "
        "or a callable."
    )


@public("keras_feedback.activations.get")
def get(identifier: Union[ActivationLike, Dict[str, Any]]) -> Callable:
    """Returns the activation an identifier names.

    Args:
        identifier: `None` (the linear activation), the name of an
            activation (every name `keras.activations` accepts, and the
            activations this library adds), a config dict as returned by
            `serialize`, or a callable, which is returned as is.

    Returns:
        A callable activation.

    Raises:
        ValueError: the name is unknown; the message lists close names.
        TypeError: the identifier is none of the types above.

    Example:

    >>> act = keras_feedback.activations.get("tanh")
    >>> act is keras.activations.tanh
    True
    >>> keras_feedback.activations.get(None) is keras.activations.linear
    True
    """
    if identifier is None:
        return _ACTIVATIONS["linear"]
    if isinstance(identifier, str):
        return _lookup(identifier)
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise _type_error(identifier, "an activation")


@public("keras_feedback.activations.serialize")
def serialize(
    activation: Union[ActivationLike, Dict[str, Any]],
) -> Union[str, Dict[str, Any], None]:
    """Returns a config for an activation, the inverse of `deserialize`.

    A builtin or registered activation function serializes to its name, so
    that layer configs stay readable (as in Keras); anything else goes
    through `keras.saving.serialize_keras_object` (register custom
    functions with `keras.saving.register_keras_serializable`).

    Args:
        activation: an activation, as accepted by `get`.

    Returns:
        A name (str), a config dict, or `None` for `None`.

    Example:

    >>> keras_feedback.activations.serialize(keras.activations.relu)
    'relu'
    >>> keras_feedback.activations.serialize("swish")
    'silu'
    """
    if activation is None:
        return None
    if isinstance(activation, (str, dict)):
        activation = get(activation)
    name = _name_of(activation)
    if name is not None:
        return name
    return keras.saving.serialize_keras_object(activation)


@public("keras_feedback.activations.deserialize")
def deserialize(
    config: Union[str, Dict[str, Any], None],
    custom_objects: Optional[Dict[str, Any]] = None,
) -> Callable:
    """Returns the activation a config describes, the inverse of `serialize`.

    Args:
        config: a name (str), a config dict from `serialize` or
            `keras.saving.serialize_keras_object`, or `None` (linear).
        custom_objects: optional dict of name -> object for custom
            activations, as in `keras.saving.deserialize_keras_object`.

    Returns:
        A callable activation.

    Example:

    >>> act = keras_feedback.activations.deserialize("sigmoid")
    >>> act is keras.activations.sigmoid
    True
    """
    if config is None:
        return get(None)
    if isinstance(config, str):
        if custom_objects and config in custom_objects:
            return custom_objects[config]
        return _lookup(config)
    if not isinstance(config, dict):
        raise _type_error(config, "an activation config")
    name = config.get("config")
    if (
        config.get("class_name") == "function"
        and isinstance(name, str)
        and name in _ACTIVATIONS
        and name not in (custom_objects or {})
    ):
        return _lookup(name)
    activation = keras.saving.deserialize_keras_object(
        config, custom_objects=custom_objects
    )
    if not callable(activation):
        raise ValueError(
            f"The config {config!r} does not describe an activation: it "
            f"deserializes to {activation!r}, which is not callable."
        )
    return activation


def _not_elementwise_error(name):
    return ValueError(
        f"derivative() covers elementwise activations only, and {name!r} "
        "is not elementwise: it mixes the elements along an axis, so its "
        "derivative is a Jacobian. Use autodiff (tf.GradientTape) for it. "
        "Elementwise activations: " + ", ".join(elementwise_names()) + "."
    )


@public("keras_feedback.activations.derivative")
def derivative(name_or_fn: ActivationLike) -> Callable:
    """Returns the analytic derivative of an elementwise activation.

    The derivative is computed in closed form with `keras.ops` (e.g.
    `sigmoid' = sigmoid (1 - sigmoid)`, `tanh' = 1 - tanh^2`,
    `relu' = [x > 0]`), elementwise, in the dtype of its input. It takes
    the same options, with the same defaults, as the activation
    (`derivative("elu")(x, alpha=0.5)`); a `functools.partial` of an
    activation with keyword options gives the matching partial derivative.

    Args:
        name_or_fn: the name of an elementwise activation, the function
            `get` returns for it, or `None` (linear).

    Returns:
        A callable `d(x, **options)` returning `d activation(x) / dx`.

    Raises:
        ValueError: the name is unknown (as in `get`), the activation is not
            elementwise (softmax, log_softmax, glu, sparsemax), or no
            analytic derivative is known for it.

    Example:

    >>> d = keras_feedback.activations.derivative("tanh")
    >>> x = keras.ops.convert_to_tensor([-1.0, 0.0, 1.0])
    >>> keras.ops.convert_to_numpy(d(x)).round(4)
    array([0.42, 1.  , 0.42], dtype=float32)
    """
    if isinstance(name_or_fn, functools.partial) and not name_or_fn.args:
        return functools.partial(derivative(name_or_fn.func), **name_or_fn.keywords)
    if isinstance(name_or_fn, str) and name_or_fn not in _ACTIVATIONS:
        raise _unknown_name_error(name_or_fn)
    if isinstance(name_or_fn, str):
        activation = _ACTIVATIONS[name_or_fn]
    else:
        activation = get(name_or_fn)
    name = _name_of(activation)
    if name is None:
        raise ValueError(
            f"No analytic derivative is known for {name_or_fn!r}: "
            "derivative() covers the elementwise activations of "
            "keras_feedback.activations, given by name or as the function "
            "get() returns. Elementwise activations: "
            + ", ".join(elementwise_names())
            + "."
        )
    if name in _DERIVATIVES:
        return _DERIVATIVES[name]
    if not _is_elementwise(activation):
        raise _not_elementwise_error(name)
    raise ValueError(f"No analytic derivative is registered for {name!r}.")
