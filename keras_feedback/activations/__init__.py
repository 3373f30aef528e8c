"""Activations: lookup by name, serialization and analytic derivatives.

`get` accepts every activation `keras.activations` ships, under the names Keras
accepts, and returns Keras's own functions, so layers built with
`keras_feedback.activations.get` behave exactly like Keras layers. `serialize`
keeps builtin activations as readable names. `derivative` gives the closed-form
derivative of every elementwise activation (sigmoid' = sigmoid (1 - sigmoid),
tanh' = 1 - tanh^2, relu' = [x > 0], ...).
"""

from keras_feedback.activations._registry import derivative
from keras_feedback.activations._registry import deserialize
from keras_feedback.activations._registry import get
from keras_feedback.activations._registry import serialize

__all__ = ["derivative", "deserialize", "get", "serialize"]
