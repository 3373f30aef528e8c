"""The core interface: what makes a recurrent cell a GRU, an LSTM, an IndRNN.

A core is the update ``h_t, states_t = f(z_t, states_{t-1})`` of a recurrent
cell, where ``z_t`` is the projected input: ``x_t W + b`` plus, in a feedback
cell, ``c_{t-1} U_c`` (and the attentional state with input feeding). The
cell (``keras_feedback.layers.FeedbackCell``) composes a core with what every
core shares: the input projection, the feedback signal ``c_t``, the attention
gate, the output projection, residual, layer norm and memory attention. The
engines, ``step``, export and the convolutional cell know a core only
through this interface.

A core is pure: its ``update`` computes with the tensors it is handed
(``StepOps.params``), never with variables, so both engines (the fused one
included), ``tf.function``, XLA and the LiteRT converter run it.
"""

import json
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback._checks import check_bool

# alias -> core class, filled by the built-in cores' ``alias``.
_ALIASES: Dict[str, type] = {}


@public("keras_feedback.cores.Weight", serializable=False)
class Weight(NamedTuple):
    """A weight a core needs, besides the input kernel the cell owns.

    Attributes:
        name: its name in ``params`` and in the cell's weights (unique in
            the cell: ``recurrent_kernel``, ``bias``, ``peephole``...).
        shape: ``("linear", inputs, outputs)`` for a kernel that ``StepOps.
            product`` (or ``linear``) applies: a matrix in the dense cell, a
            convolution kernel in the convolutional one; or a plain shape
            tuple (a vector of ``units`` broadcasts over the positions of a
            map).
        group: which of the cell's initializer, regularizer and constraint
            arguments apply (``"recurrent"``, ``"bias"``, ``"kernel"``).
        initializer: None for the group's; or a function of the group's
            initializer returning the initializer to use (an LSTM's forget
            bias of ones wraps the bias initializer).
        constraint: None for the group's; or a constraint of the core's own.
    """

    name: str
    shape: Tuple[Any, ...]
    group: str
    initializer: Optional[Callable] = None
    constraint: Optional[Any] = None

    @property
    def linear(self):
        return bool(self.shape) and self.shape[0] == "linear"


@public("keras_feedback.cores.StepOps", serializable=False)
class StepOps:
    """What a core's ``update`` computes with, for one step.

    Attributes:
        params: the cell's parameter tensors by name (compute dtype).
        recurrent_input: ``h_{t-1}``, times the recurrent dropout mask when
            training with ``recurrent_dropout``: what a core's recurrent
            products read.
        activation, recurrent_activation: the cell's activations (bound to
            their parameters if learnable; in half precision they compute in
            float32, see ``up``).
    """

    def __init__(
        self,
        params,
        recurrent_input,
        activation,
        recurrent_activation,
        products=None,
        linear=None,
    ):
        self.params = params
        self.recurrent_input = recurrent_input
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self._products = products
        self._linear = linear
        dtype = recurrent_input.dtype
        self._wide = tf.float32 if dtype in (tf.float16, tf.bfloat16) else None
        self.dtype = dtype

    def linear(self, x, kernel):
        """``x`` times ``kernel`` (a convolution in the convolutional cell)."""
        return self._linear(x, kernel)

    def product(self, name, x=None):
        """``linear(x, params[name])``, ``x`` defaulting to
        ``recurrent_input``; the engine may have computed it (a product the
        core's ``deferred`` names)."""
        if x is None and self._products is not None and name in self._products:
            return self._products[name]
        return self.linear(self.recurrent_input if x is None else x, self.params[name])

    def up(self, x):
        """``x`` in the dtype of the gates' elementwise math: float32 in
        half precision (TensorFlow's half-precision elementwise kernels
        convert every element on their own), else ``x``."""
        return x if self._wide is None else tf.cast(x, self._wide)

    def down(self, x):
        """``x`` back in the compute dtype (``up``'s inverse)."""
        return x if self._wide is None else tf.cast(x, self.dtype)


@public("keras_feedback.cores.Core")
class Core:
    """Base class of the recurrent cores.

    Subclass it to bring a core: declare its states, the width of its
    projected input, the weights it needs, and its update as pure math.
    The cell adds the feedback loop, attention, output projection, residual,
    layer norm and memory attention around it, the engines run it over time
    (the fused XLA one included), and ``step``, masking, ``stateful``,
    ``.keras`` saving and both exports work unchanged. Register the subclass
    with ``keras.saving.register_keras_serializable`` to load saved models
    that use it; its ``get_config`` must return its constructor arguments.

    Class attributes:
        alias: the string that names a built-in core (``"gru"``); None for
            yours.
        state_names: the core's states, ``h`` first (an LSTM adds
            ``"carry"``); each has ``units`` values per position.
        default_activation, default_recurrent_activation: what the cell's
            ``activation`` and ``recurrent_activation`` arguments left at
            None mean for this core.
        input_kernel: True: the cell projects the inputs with its kernel
            ``W`` (hoisted out of the loop) and adds the feedback as
            ``c_{t-1} U_c``; False: the core reads ``[x_t; c_{t-1}]`` as
            they are (``KerasCellCore``).
        fused: whether the fused XLA engine may run the core (False: the
            reference engine runs it).

    Example (Chen's MinimalRNN, written as a core):

    >>> import tensorflow as tf
    >>> from keras_feedback import cores, layers
    >>> class MinimalRNN(cores.Core):
    ...     def width(self, units):
    ...         return 2 * units  # z_t: the input map and its gate
    ...     def weights(self, units):
    ...         return (cores.Weight("recurrent_kernel",
    ...                              ("linear", units, units), "recurrent"),
    ...                 cores.Weight("bias", (2 * units,), "bias"))
    ...     def update(self, ops, projected, states, candidate_term=None):
    ...         x_map, x_gate = tf.split(projected, 2, axis=-1)
    ...         z = ops.activation(x_map)
    ...         u = ops.recurrent_activation(x_gate + ops.product("recurrent_kernel"))
    ...         return [u * states[0] + (1 - u) * z]
    >>> layer = layers.Feedback(4, feedback_units=2, core=MinimalRNN())
    >>> layer(tf.zeros((2, 3, 5))).shape
    TensorShape([2, 4])
    """

    alias: Optional[str] = None
    state_names: Tuple[str, ...] = ("h",)
    default_activation: str = "tanh"
    default_recurrent_activation: str = "sigmoid"
    input_kernel: bool = True
    fused: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        alias = cls.__dict__.get("alias")
        if alias is not None:
            _ALIASES[alias] = cls

    def width(self, units: int) -> int:
        """The size of the projected input ``z_t`` for ``units`` (a GRU's
        ``3 * units``); the cell's input kernel and feedback kernel ``U_c``
        map to it."""
        return units

    def weights(self, units: int) -> Sequence[Weight]:
        """The weights the core reads besides the input kernel ``kernel``
        (the cell's, shape ``(features, width)``): its recurrent kernel and
        bias, at least."""
        raise NotImplementedError

    def input_bias(self, params: Dict[str, tf.Tensor]) -> Optional[tf.Tensor]:
        """The bias the cell adds to the input projection (``params["bias"]``
        by default, None without one); the core adds any other bias itself."""
        return params.get("bias")

    def update(
        self,
        ops: StepOps,
        projected: tf.Tensor,
        states: List[tf.Tensor],
        candidate_term: Optional[tf.Tensor] = None,
        candidate_scale: Optional[tf.Tensor] = None,
    ) -> List[tf.Tensor]:
        """One step: the core's new states, ``h`` first.

        Args:
            ops: the step's parameters and operations (``StepOps``).
            projected: ``z_t``, ``(batch, ..., width)``: the projected input,
                its bias and the cell's feedback term.
            states: the core's previous states (``state_names``).
            candidate_term: None, or a ``(batch, ..., units)`` recurrent term
                to add to the candidate's pre-activation only (inside a GRU's
                reset gate, to an LSTM's cell input, to a simple core's
                pre-activation): how a layer above feeds back into this one.
            candidate_scale: None, or a ``(batch, ..., 1)`` factor of the
                core's own recurrent term in the candidate (``U_h h_{t-1}``
                where ``candidate_term`` enters it; a GRU's gates and an
                LSTM's input, forget and output gates keep theirs): the
                gated-feedback stack's gate ``g^{j->j}``
                (``layers.FeedbackStack``). A core that has no such term may
                leave the argument out of its ``update``; the stack then
                refuses it with ``top_down="gated"``.

        Returns:
            The new states, in ``state_names`` order.
        """
        raise NotImplementedError

    def deferred(self) -> Sequence[Tuple[str, bool]]:
        """The products of ``recurrent_input`` that an engine may compute
        for ``update`` (``ops.product(name)``), as ``(kernel name,
        additive)``: additive when ``update`` adds the product to its
        input-side term unchanged (not a GRU's reset-gated ``U_h h``). The
        fused engine batches their gradients over all steps."""
        return ()

    def state_sizes(self, units: int) -> Tuple[int, ...]:
        """The sizes of the core's states (``units`` each by default)."""
        return (units,) * len(self.state_names)

    def check_units(self, units: int) -> None:
        """Raises ValueError if the core cannot have ``units`` hidden units."""

    def layer(self) -> Optional[keras.layers.Layer]:
        """A Keras layer the core owns (a wrapped cell), which the feedback
        cell tracks (its weights are saved with the cell), or None."""
        return None

    def build(self, input_size: int) -> None:
        """Builds ``layer()`` for inputs of ``input_size`` (an
        ``input_kernel=False`` core: the features plus the feedback units)."""

    def variables(self) -> List[Any]:
        """The variables of ``layer()`` that each step gets as tensors
        (``params["core_variables"]``, in this order)."""
        return []

    def get_config(self) -> Dict[str, Any]:
        """The core's constructor arguments."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # Cores are compared and hashed by type and configuration: the step math
    # is cached per configuration.
    def _key(self):
        return (type(self), json.dumps(self.get_config(), sort_keys=True, default=repr))

    def __eq__(self, other):
        return isinstance(other, Core) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


CoreLike = Union[str, Core, Dict[str, Any]]


@public("keras_feedback.cores.get")
def get(core: CoreLike) -> Core:
    """The core ``core`` names: a ``Core``, an alias (``"simple"``,
    ``"gru"``, ``"lstm"``, ``"indrnn"``) or a serialized core (a dict, as
    ``serialize`` writes).

    Raises:
        ValueError: an unknown alias, or a dict that is not a core.
        TypeError: anything else (a Keras RNN cell: ``KerasCellCore`` wraps
            one).
    """
    if isinstance(core, Core):
        return core
    if isinstance(core, str):
        if core not in _ALIASES:
            raise ValueError(
                f"Argument `core` must be one of {tuple(_ALIASES)}, a "
                f"keras_feedback.cores.Core or a Keras RNN cell, got {core!r}"
            )
        return _ALIASES[core]()
    from keras_feedback.cores._keras_cell import KerasCellCore
    from keras_feedback.cores._keras_cell import is_keras_cell

    if is_keras_cell(core):
        return KerasCellCore(core)
    if isinstance(core, dict):
        obj = keras.saving.deserialize_keras_object(core)
        if not isinstance(obj, Core):
            raise ValueError(
                f"Argument `core`: the config {core!r} gives {obj!r}, not a "
                "keras_feedback.cores.Core"
            )
        return obj
    raise TypeError(
        f"Argument `core` must be a core alias {tuple(_ALIASES)}, a "
        "keras_feedback.cores.Core or a Keras RNN cell (a layer with "
        f"`state_size` and `call(inputs, states)`), got {core!r} "
        f"({type(core).__name__})"
    )


# The cell arguments that configure one core: argument -> the core's attribute.
_CORE_OPTIONS = {"lstm": "unit_forget_bias", "gru": "reset_after"}


def resolve(core, unit_forget_bias=None, reset_after=None):
    """The ``Core`` of a cell's ``core`` argument, with the arguments that
    configure a built-in core (Keras's ``LSTM(unit_forget_bias=...)``,
    ``GRU(reset_after=...)``): they set the option of a core given by its
    alias, must agree with a core object's, and are ignored by the cores
    that have no such option (as a GRU ignores ``unit_forget_bias``)."""
    options = {"unit_forget_bias": unit_forget_bias, "reset_after": reset_after}
    for name, value in options.items():
        if value is not None:
            check_bool(name, value)
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(core, str) and core in _CORE_OPTIONS:
        option = _CORE_OPTIONS[core]
        resolved = get(core)
        if option in given:
            resolved = type(resolved)(**{option: given[option]})
        return resolved
    resolved = get(core)
    for name, value in given.items():
        if hasattr(resolved, name) and getattr(resolved, name) != value:
            raise ValueError(
                f"Argument `{name}`={value!r} contradicts `core`={resolved!r}: "
                f"leave `{name}` out, or pass a core with {name}={value!r}"
            )
    return resolved


@public("keras_feedback.cores.serialize")
def serialize(core: Core) -> Union[str, Dict[str, Any]]:
    """What a cell's config writes for ``core``: its alias for a built-in
    core with default options (so that configs and ``.keras`` files of
    earlier versions and of these cores read the same), else the Keras
    serialization of the object."""
    alias = type(core).__dict__.get("alias")
    if alias is not None and core == type(core)():
        return alias
    return keras.saving.serialize_keras_object(core)


def aliases():
    """The built-in cores' aliases, in registration order."""
    return tuple(_ALIASES)
