"""MADE: a masked MLP whose output d depends only on the inputs before d in an ordering."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.common import check_choice, check_positive_int, register
from zoo.layers.masked_dense import MaskedDense, constant_initializer

ORDERS = ("left-to-right", "right-to-left", "random")
HIDDEN_DEGREES = ("equal", "random")
CONDITIONAL_LAYERS = ("all_layers", "first_layer")


def input_degrees(event_size: int, input_order="left-to-right", rng=None) -> np.ndarray:
    """Degree (1-based position in the ordering) of each input: ``[event_size]`` ints.

    ``input_order``: ``"left-to-right"``, ``"right-to-left"``, ``"random"`` (drawn with
    ``rng``) or an explicit array of degrees, a permutation of 1..event_size (TFP's
    convention: input i is generated at step ``input_order[i]``).
    """
    if isinstance(input_order, str):
        check_choice("input_order", input_order, ORDERS)
        if input_order == "left-to-right":
            return np.arange(1, event_size + 1)
        if input_order == "right-to-left":
            return np.arange(event_size, 0, -1)
        return (rng or np.random).permutation(event_size) + 1
    order = np.asarray(input_order, np.int64).ravel()
    if order.shape != (event_size,) or not np.array_equal(np.sort(order),
                                                          np.arange(1, event_size + 1)):
        raise ValueError(f"`input_order` must be a permutation of 1..{event_size}, got "
                         f"{input_order!r}.")
    return order


def hidden_degrees_of(units: int, previous: np.ndarray, event_size: int,
                      hidden_degrees="equal", rng=None) -> np.ndarray:
    """Degrees of one hidden layer: units of degree m see inputs of degree <= m; degrees lie
    in [min(previous), event_size - 1] (Germain et al. 2015, eq. 13); ``"equal"`` spreads
    them evenly as TFP's ``AutoregressiveNetwork`` does, ``"random"`` draws them uniformly."""
    check_choice("hidden_degrees", hidden_degrees, HIDDEN_DEGREES)
    low = min(int(np.min(previous)), event_size - 1)
    if hidden_degrees == "random":
        return (rng or np.random).randint(low, event_size, size=units)
    even = np.ceil(np.arange(1, units + 1) * (event_size - 1) / float(units + 1))
    return np.maximum(low, even.astype(np.int64))


def made_masks(degrees, params: int = 1) -> list:
    """Masks [in, out] of each layer from the degree vectors ``[inputs, hidden_1, ...]``:
    hidden units connect k -> k' when m(k') >= m(k); output d (``params`` units each, index
    ``d * params + p``) sees units with m < d's degree."""
    masks = [(d_in[:, None] <= d_out[None, :]).astype(np.uint8)
             for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out = (degrees[-1][:, None] < degrees[0][None, :]).astype(np.uint8)
    masks.append(np.repeat(out, params, axis=1))
    return masks


def direct_mask(input_degrees, params: int = 1) -> np.ndarray:
    """Mask [in, out] of the direct input -> output connection: output d (``params`` units
    each) sees the inputs before d in the ordering (the no-hidden-layer mask of
    :func:`made_masks`, Germain et al.'s ``direct_input_connect="Output"``)."""
    return made_masks([np.asarray(input_degrees)], params)[0]


@register
class AutoregressiveNetwork(keras.layers.Layer):
    r"""MADE (Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", 2015) as a Keras 3 layer: the counterpart of TFP's ``tf_keras``-only
    ``tfb.AutoregressiveNetwork``.

    Each input $x_i$ gets a degree $m(i)$ (its position in the ordering), each hidden unit a
    degree in $[\min m^{l-1}, D-1]$; weight masks $M^l_{k'k} = [m^l(k') \ge m^{l-1}(k)]$ and
    $M^{out}_{dk} = [m(d) > m^L(k)]$ make output $d$ a function of $\{x_i : m(i) < m(d)\}$
    only, so $p(x) = \prod_d p(x_d \mid \mathrm{out}_d)$ is a normalized autoregressive model.
    ``num_masks`` > 1 holds that many mask draws (new random ordering when
    ``input_order="random"``, new hidden degrees when ``hidden_degrees="random"``), for
    connectivity-agnostic training and mask ensembles; ``call(..., mask_index=k)`` picks one.
    An optional conditioning input (no mask) is added before each activation
    (``conditional_layers="all_layers"``, TFP's default) or only in the first layer.
    ``direct_connections=True`` adds a masked linear map from the inputs straight to the
    outputs, $\mathrm{out} = W^{out} h^L + (D \odot M^{direct})\,x$ with
    $M^{direct}_{dj} = [m(j) < m(d)]$ (the output layer's strict mask, on the inputs): every
    output then reaches every input before it directly, as in a fully visible sigmoid belief
    net, instead of only through hidden units of lower degree (the authors' code, github
    mgermain/MADE, ``direct_input_connect="Output"``, used in all its published commands).

    ``call(x, conditional=None, mask_index=0)`` maps ``[batch..., event_size]`` to
    ``[batch..., event_size, params]``; masks and degrees are non-trainable weights, so a
    ``.keras`` file restores them exactly.

    Args:
        event_size: int. Dimension D of x.
        params: int. Outputs per input dimension (e.g. 2 for a shift and a log-scale).
        hidden_units: tuple of int. Widths of the hidden layers (empty: x -> output directly,
            the fully visible sigmoid belief net's connectivity).
        input_order: str or sequence. ``"left-to-right"``, ``"right-to-left"``, ``"random"``
            or explicit degrees (a permutation of 1..D).
        hidden_degrees: str. ``"equal"`` or ``"random"``.
        num_masks: int. Number of mask draws held.
        activation: str. Hidden activation.
        conditional_size: int or None. Width of the conditioning input.
        conditional_layers: str. ``"all_layers"`` or ``"first_layer"``.
        use_bias: bool. Biases on the masked layers.
        kernel_initializer: str. Kernel initializer.
        direct_connections: bool. Add the masked direct input -> output connection (no
            bias; needs at least one hidden layer).
        seed: int or None. Seed of the random orderings and degrees (None: drawn once).

    Example:

    >>> import numpy as np
    >>> made = AutoregressiveNetwork(3, params=2, hidden_units=(8,), seed=0)
    >>> tuple(made(np.zeros((5, 3), "float32")).shape)
    (5, 3, 2)
    """

    def __init__(self, event_size: int, params: int = 1, hidden_units=(),
                 input_order="left-to-right", hidden_degrees: str = "equal", num_masks: int = 1, activation: str = "relu",
                 conditional_size: int | None = None, conditional_layers: str = "all_layers",
                 use_bias: bool = True, kernel_initializer="glorot_uniform",
                 direct_connections: bool = False, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("event_size", event_size)
        check_positive_int("params", params)
        check_positive_int("num_masks", num_masks)
        check_positive_int("conditional_size", conditional_size, allow_none=True)
        check_choice("hidden_degrees", hidden_degrees, HIDDEN_DEGREES)
        check_choice("conditional_layers", conditional_layers, CONDITIONAL_LAYERS)
        hidden_units = tuple(int(u) for u in hidden_units)
        for u in hidden_units:
            check_positive_int("hidden_units", u)
        if not isinstance(direct_connections, (bool, np.bool_)):
            raise ValueError(f"`direct_connections` must be True or False, got "
                             f"{direct_connections!r}.")
        if direct_connections and not hidden_units:
            raise ValueError("`direct_connections=True` adds an input -> output connection "
                             "beside the hidden layers; with `hidden_units=()` the network is "
                             "that connection already.")
        if not isinstance(input_order, str):
            input_order = [int(i) for i in input_degrees(event_size, input_order)]
        else:
            check_choice("input_order", input_order, ORDERS)
        self.event_size = event_size
        self.params = params
        self.hidden_units = hidden_units
        self.input_order = input_order
        self.hidden_degrees = hidden_degrees
        self.num_masks = num_masks
        self.activation = activation
        self.conditional_size = conditional_size
        self.conditional_layers = conditional_layers
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.direct_connections = bool(direct_connections)
        self.seed = seed
        self._mask_seed = int(np.random.randint(2**31)) if seed is None else int(seed)
        widths = (*hidden_units, event_size * params)
        self.masked = [MaskedDense(w, num_masks=num_masks, use_bias=use_bias,
                                   kernel_initializer=kernel_initializer, dtype=self.dtype_policy,
                                   name=f"masked_{i}")
                       for i, w in enumerate(widths)]
        self.conditioners = []
        if conditional_size is not None:
            count = len(widths) if conditional_layers == "all_layers" else 1
            self.conditioners = [keras.layers.Dense(widths[i], use_bias=False,
                                                    kernel_initializer=kernel_initializer,
                                                    dtype=self.dtype_policy,
                                                    name=f"conditional_{i}")
                                 for i in range(count)]
        # Created last (and only when asked) so that the other weights keep their order.
        self.direct = (MaskedDense(event_size * params, num_masks=num_masks, use_bias=False,
                                   kernel_initializer=kernel_initializer,
                                   dtype=self.dtype_policy, name="direct")
                       if self.direct_connections else None)
        self._hidden_activation = keras.activations.get(activation)

    # ------------------------------------------------------------------ masks
    def draw_degrees(self, index: int) -> list:
        """Degree vectors ``[inputs, hidden_1, ...]`` of mask draw ``index`` (reproducible
        from ``seed``)."""
        rng = np.random.RandomState((self._mask_seed * 1_000_003 + index) % (2**32))
        degrees = [input_degrees(self.event_size, self.input_order, rng)]
        for units in self.hidden_units:
            degrees.append(hidden_degrees_of(units, degrees[-1], self.event_size,
                                             self.hidden_degrees, rng))
        return degrees

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if dim != self.event_size:
            raise ValueError(f"AutoregressiveNetwork(event_size={self.event_size}) got inputs "
                             f"with last axis {dim}.")
        draws = [self.draw_degrees(k) for k in range(self.num_masks)]
        masks = []  # per layer [num_masks, in, out], filled one draw at a time (peak memory)
        for k, d in enumerate(draws):
            for layer_index, mask in enumerate(made_masks(d, self.params)):
                if k == 0:
                    masks.append(np.empty((self.num_masks, *mask.shape), mask.dtype))
                masks[layer_index][k] = mask
        # Initial values, not assigns: a first call under a symbolic scope would drop those.
        self.degrees = self.add_weight(
            name="degrees", shape=(self.num_masks, self.event_size), trainable=False,
            dtype="float32", autocast=False,
            initializer=constant_initializer(np.stack([d[0] for d in draws])))
        width = dim
        for layer, mask in zip(self.masked, masks):
            layer.initial_masks = mask
            layer.build((None, width))
            width = layer.units
        for layer in self.conditioners:
            layer.build((None, self.conditional_size))
        if self.direct is not None:
            self.direct.initial_masks = np.stack([direct_mask(d[0], self.params)
                                                  for d in draws])
            self.direct.build((None, dim))

    def set_masks(self, masks, degrees) -> None:
        """Replace every layer's masks (``masks[l]``: [num_masks, in, out], or [in, out] for
        one mask) and the input degrees [num_masks, event_size] they were made from (the
        direct connection's masks, if any, follow from the degrees)."""
        if len(masks) != len(self.masked):
            raise ValueError(f"`masks` needs {len(self.masked)} entries (one per layer), got "
                             f"{len(masks)}.")
        for layer, mask in zip(self.masked, masks):
            layer.set_masks(mask)
        degrees = np.asarray(degrees, np.float32).reshape(self.num_masks, self.event_size)
        self.degrees.assign(degrees)
        if self.direct is not None:
            self.direct.set_masks(np.stack([direct_mask(d, self.params) for d in degrees]))

    def orderings(self) -> np.ndarray:
        """``[num_masks, event_size]``: the input indices in generation order, per mask."""
        return np.argsort(np.asarray(self.degrees), axis=-1, kind="stable")

    # ------------------------------------------------------------------ call
    def call(self, x, conditional=None, mask_index=0):
        if self.conditional_size is not None and conditional is None:
            raise ValueError("This AutoregressiveNetwork was built with `conditional_size`; "
                             "pass `conditional`.")
        if self.conditional_size is None and conditional is not None:
            raise ValueError("`conditional` was passed but `conditional_size` is None.")
        lead = tf.shape(x)[:-1]
        h = x_flat = tf.reshape(x, [-1, self.event_size])
        c = None
        if conditional is not None:
            c = tf.cast(tf.reshape(conditional, [-1, self.conditional_size]), h.dtype)
            c = tf.broadcast_to(c, [tf.shape(h)[0], self.conditional_size])
        last = len(self.masked) - 1
        for i, layer in enumerate(self.masked):
            h = layer(h, mask_index=mask_index)
            if c is not None and i < len(self.conditioners):
                h = h + self.conditioners[i](c)
            if i < last:
                h = self._hidden_activation(h)
        if self.direct is not None:
            h = h + self.direct(x_flat, mask_index=mask_index)
        return tf.reshape(h, tf.concat([lead, [self.event_size, self.params]], 0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.event_size, self.params)

    def get_config(self):
        config = super().get_config()
        config.update(event_size=self.event_size, params=self.params,
                      hidden_units=list(self.hidden_units), input_order=self.input_order,
                      hidden_degrees=self.hidden_degrees, num_masks=self.num_masks,
                      activation=self.activation, conditional_size=self.conditional_size,
                      conditional_layers=self.conditional_layers, use_bias=self.use_bias,
                      kernel_initializer=self.kernel_initializer,
                      direct_connections=self.direct_connections, seed=self.seed)
        return config
