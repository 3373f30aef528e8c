"""Public recurrent cores of keras_feedback: what makes a cell a GRU, an
LSTM, an IndRNN, or yours (see ``Core``)."""

from keras_feedback.cores._base import Core
from keras_feedback.cores._base import StepOps
from keras_feedback.cores._base import Weight
from keras_feedback.cores._base import get
from keras_feedback.cores._base import serialize
from keras_feedback.cores._builtin import GRUCore
from keras_feedback.cores._builtin import LSTMCore
from keras_feedback.cores._builtin import SimpleCore
from keras_feedback.cores._indrnn import AbsRange
from keras_feedback.cores._indrnn import IndRNNCore
from keras_feedback.cores._keras_cell import KerasCellCore

__all__ = [
    "AbsRange",
    "Core",
    "GRUCore",
    "IndRNNCore",
    "KerasCellCore",
    "LSTMCore",
    "SimpleCore",
    "StepOps",
    "Weight",
    "get",
    "serialize",
]
