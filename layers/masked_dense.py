"""Dense layer whose kernel is multiplied by one of a stack of fixed binary masks."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.common import check_positive_int, register


MASK_DTYPE = "uint8"


def constant_initializer(value):
    """An initializer returning ``value`` (an array of the weight's shape)."""
    value = np.asarray(value)

    def init(shape, dtype=None):
        return tf.constant(value.reshape(shape), dtype=dtype or "float32")

    return init


@register
class MaskedDense(keras.layers.Layer):
    r"""$y = a\big(x\,(W \odot M_k) + b\big)$ with $M_k$ one of ``num_masks`` binary masks.

    The building block of MADE (Germain, Gregor, Murray & Larochelle, "MADE: Masked
    Autoencoder for Distribution Estimation", 2015): the masks cut the connections that would
    let an output see inputs it must not depend on. The masks are a non-trainable uint8 weight
    ``masks`` [num_masks, input_dim, units] of 0/1 (all ones until :meth:`set_masks`), so
    they are saved with the weights; ``call(x, mask_index=k)`` picks one (a tensor index is
    fine, e.g. a random draw per batch for connectivity-agnostic training).

    Args:
        units: int. Output width.
        num_masks: int. Number of masks held (mask ensembles, resampled connectivity).
        activation: str or None. Activation applied to the output.
        use_bias: bool. Whether to add a bias.
        kernel_initializer: str. Initializer of the (unmasked) kernel.
        bias_initializer: str. Initializer of the bias.

    Example:

    >>> import numpy as np
    >>> layer = MaskedDense(2)
    >>> _ = layer(np.zeros((1, 2), "float32"))
    >>> layer.set_masks(np.array([[[1, 1], [0, 1]]]))  # output 0 sees input 0 only
    >>> _ = layer.kernel.assign(np.ones((2, 2), "float32"))
    >>> np.asarray(layer(np.array([[1.0, 10.0]], "float32"))).tolist()
    [[1.0, 11.0]]
    """

    def __init__(self, units: int, num_masks: int = 1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        check_positive_int("num_masks", num_masks)
        self.units = units
        self.num_masks = num_masks
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._activation = keras.activations.get(activation)

    def build(self, input_shape):
        input_dim = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(input_dim, self.units),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.units,),
                                     initializer=self.bias_initializer)
                     if self.use_bias else None)
        # Masks a parent chose before building (MADE's degrees) are the initial value rather
        # than an assign after creation: a first call under a symbolic scope drops assigns.
        # Stored as uint8 (0/1), a quarter of float32: the 32 masks of Germain et al.'s 2 x 8000
        # MADE take 2.5 GB so, against 9.9 GB as float32 (which did not fit in 24 GB while
        # building).
        initial = getattr(self, "initial_masks", None)
        self.masks = self.add_weight(
            name="masks", shape=(self.num_masks, input_dim, self.units), trainable=False,
            dtype=MASK_DTYPE, autocast=False,
            initializer="ones" if initial is None else constant_initializer(initial))
        self.initial_masks = None  # the variable holds them now: free the host copy

    def set_masks(self, masks) -> None:
        """Replace the masks: ``masks`` [num_masks, input_dim, units] (or [input_dim, units]
        when ``num_masks`` is 1) of 0/1 values."""
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape != tuple(self.masks.shape):
            raise ValueError(f"`masks` must have shape {tuple(self.masks.shape)}, got "
                             f"{masks.shape}.")
        if not np.all((masks == 0) | (masks == 1)):
            raise ValueError("`masks` must hold only 0 and 1.")
        self.masks.assign(masks.astype(MASK_DTYPE))

    def load_own_variables(self, store):
        """As Keras', with masks saved as float32 (before they were uint8) cast on loading."""
        variables = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) != len(variables):
            return super().load_own_variables(store)  # Keras' own error
        values = {}
        for i, v in enumerate(variables):
            value = store[f"{i}"]
            values[f"{i}"] = np.asarray(value).astype(MASK_DTYPE) if v is self.masks else value
        super().load_own_variables(values)

    def masked_kernel(self, mask_index=0):
        """The kernel with mask ``mask_index`` applied, in the compute dtype."""
        mask = self.masks[0] if self.num_masks == 1 else tf.gather(self.masks, mask_index)
        kernel = tf.cast(self.kernel, self.compute_dtype)
        return kernel * tf.cast(mask, kernel.dtype)

    def call(self, inputs, mask_index=0):
        y = tf.matmul(inputs, self.masked_kernel(mask_index))
        if self.bias is not None:
            y = y + tf.cast(self.bias, y.dtype)
        return self._activation(y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, num_masks=self.num_masks, activation=self.activation,
                      use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer)
        return config
