"""Activations: lookup by name, serialization and analytic derivatives.

`get` accepts every activation `keras.activations` ships, under the names Keras
accepts, and returns Keras's own functions, so layers built with
`keras_feedback.activations.get` behave exactly like Keras layers. `serialize`
keeps builtin activations as readable names. `derivative` gives the closed-form
derivative of every elementwise activation (sigmoid' = sigmoid (1 - sigmoid),
tanh' = 1 - tanh^2, relu' = [x > 0], ...).

The library adds fixed activations Keras lacks (``lisht``, ``snake``,
``rrelu``) and learnable ones (``PReLU``, ``Swish``, ``Snake``, ``Pade``,
``APL``), registered as ``"prelu"``, ``"learnable_swish"``,
``"learnable_snake"``, ``"pade"`` and ``"apl"``: ``get(name)`` returns a
fresh instance, which a cell builds with its own weights (see
``ParametricActivation`` for how their parameters reach the step math).
``search`` tries activations for a model with keras-tuner.
"""

from keras_feedback.activations._extras import lisht
from keras_feedback.activations._extras import rrelu
from keras_feedback.activations._extras import snake
from keras_feedback.activations._learnable import LearnableActivation
from keras_feedback.activations._learnable import ParametricActivation
from keras_feedback.activations._learnable import PureActivation
from keras_feedback.activations._pade import Pade
from keras_feedback.activations._pade import pade_coefficients
from keras_feedback.activations._registry import derivative
from keras_feedback.activations._registry import deserialize
from keras_feedback.activations._registry import get
from keras_feedback.activations._registry import serialize
from keras_feedback.activations._search import search
from keras_feedback.activations._units import APL
from keras_feedback.activations._units import PReLU
from keras_feedback.activations._units import RReLU
from keras_feedback.activations._units import Snake
from keras_feedback.activations._units import Swish

__all__ = [
    "APL",
    "LearnableActivation",
    "PReLU",
    "Pade",
    "ParametricActivation",
    "PureActivation",
    "RReLU",
    "Snake",
    "Swish",
    "derivative",
    "deserialize",
    "get",
    "lisht",
    "pade_coefficients",
    "rrelu",
    "search",
    "serialize",
    "snake",
]
