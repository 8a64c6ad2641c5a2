"""Encoder/decoder networks shared by the zoo's models (MLP and convolutional)."""

from __future__ import annotations

import math

import keras

ARCHITECTURES = ("mlp", "conv")


def mlp(units, activation: str, name: str, output_units: int | None = None) -> keras.Sequential:
    """Dense layers of ``units`` with ``activation``, then an optional linear output layer."""
    layers = [keras.layers.Dense(u, activation=activation, name=f"{name}_{i}")
              for i, u in enumerate(units)]
    if output_units is not None:
        layers.append(keras.layers.Dense(output_units, name=f"{name}_out"))
    return keras.Sequential(layers, name=name)


def conv_encoder(filters, activation: str, name: str) -> keras.Sequential:
    """Strided 3x3 convolutions (each halves height and width), then flatten."""
    layers = [keras.layers.Conv2D(f, 3, strides=2, padding="same", activation=activation,
                                  name=f"{name}_conv{i}") for i, f in enumerate(filters)]
    return keras.Sequential(layers + [keras.layers.Flatten()], name=name)


def conv_decoder(filters, activation: str, image_shape, out_channels: int,
                 name: str) -> keras.Sequential:
    """Dense to a small feature map, transposed convolutions back to ``image_shape``."""
    height, width, _ = image_shape
    factor = 2 ** len(filters)
    if height % factor or width % factor:
        raise ValueError(
            f"A convolutional model with {len(filters)} stride-2 layers needs image height "
            f"and width divisible by {factor}; got input_shape={tuple(image_shape)}."
        )
    h, w = height // factor, width // factor
    layers = [
        keras.layers.Dense(h * w * filters[-1], activation=activation, name=f"{name}_dense"),
        keras.layers.Reshape((h, w, filters[-1])),
    ]
    layers += [keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same",
                                            activation=activation, name=f"{name}_deconv{i}")
               for i, f in enumerate(reversed(filters))]
    layers.append(keras.layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_out"))
    return keras.Sequential(layers, name=name)


def flat_size(shape) -> int:
    return int(math.prod(shape))
