"""The adapter registry: how a zoo model that does not implement ``export_spec`` itself gets
the :class:`export.protocol.Exportable` protocol.

A model class names its adapter in the class attribute ``export_adapter`` (a string; see
:class:`zoo.contract.ZooModel`); an adapter registers under that name with
``@register_adapter("name")``. Adapters of a model family live in
``zoo/export/adapters_<family>.py`` modules, which this module finds and imports on first use,
so a new family adds its adapter without editing this file (and ``zoo`` never imports
``zoo.export``). Each adapter builds the signatures from the model's public pieces only
(``decode``, ``encode``, ``initial_state``, ``filter_step``...).

Registered here: ``"latent"`` (VAE, DLGM, CategoricalVAE: ``decode``, ``sample``,
``sample_random``, ``encode``).
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import tensorflow as tf

from zoo.export.protocol import (  # noqa: F401 - state helpers re-exported for adapters
    DECODE,
    ENCODE,
    SAMPLE,
    SAMPLE_RANDOM,
    Exportable,
    ExportSpec,
    Signature,
    pack_state,
    spec,
    state_layout,
    state_size,
    unpack_state,
)

_ADAPTERS: dict = {}  # name -> callable(model) -> an object with export_spec(batch_size)
_DISCOVERED = False


def register_adapter(name: str):
    """Decorator: register an adapter (a class or a function taking the model) under ``name``,
    the value of ``export_adapter`` on the model classes it exports."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an adapter name must be a non-empty string, got {name!r}")

    def wrap(adapter):
        if name in _ADAPTERS and _ADAPTERS[name] is not adapter:
            raise ValueError(f"an export adapter named {name!r} is already registered "
                             f"({_ADAPTERS[name].__name__})")
        _ADAPTERS[name] = adapter
        return adapter
    return wrap


def _discover() -> None:
    """Import every ``zoo.export.adapters_*`` module once (they register themselves)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import zoo.export

    for info in pkgutil.iter_modules(zoo.export.__path__):
        if info.name.startswith("adapters_"):
            importlib.import_module(f"zoo.export.{info.name}")


def registered_adapters() -> list:
    """Names of every registered adapter (after importing the ``adapters_*`` modules)."""
    _discover()
    return sorted(_ADAPTERS)


def adapter_for(model):
    """The adapter named by ``model.export_adapter``; TypeError if the model names none, or
    names one that is not registered."""
    name = getattr(model, "export_adapter", None)
    if name is None:
        raise TypeError(
            f"{type(model).__name__} is not exportable: implement "
            f"`export_spec(batch_size) -> zoo.export.protocol.ExportSpec` on it, or set its "
            f"`export_adapter` to a name registered with "
            f"`zoo.export.adapters.register_adapter`.")
    _discover()
    if name not in _ADAPTERS:
        raise TypeError(f"{type(model).__name__}.export_adapter is {name!r}, but no adapter "
                        f"has that name; registered: {sorted(_ADAPTERS)}")
    return _ADAPTERS[name](model)


def as_exportable(model) -> Exportable:
    """The model itself when it implements the protocol, else its adapter."""
    if isinstance(model, Exportable):
        return model
    return adapter_for(model)


def _config(model) -> dict:
    return {k: v for k, v in model.get_config().items()
            if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}


def model_config(model) -> dict:
    """The JSON-able part of a model's config, for an export's metadata."""
    return _config(model)


# ---------------------------------------------------------------------------- VAE family
def posterior_parameters(layer, features) -> dict:
    """``layer.posterior_parameters(features)``: built-in TFLite ops for every family (the
    layer reads the full-covariance diagonal with a masked sum, not a Flex diag_part)."""
    return layer.posterior_parameters(features)


class LatentModelAdapter:
    """``decode``, ``sample`` (noise as an input) and ``encode`` of a latent-variable model.

    Decoder outputs: Bernoulli ``probs`` and ``logits``; Gaussian ``mean`` and ``scale``.
    ``sample`` takes the likelihood noise (uniform for Bernoulli, standard normal for
    Gaussian) so it needs no random op; ``sample_random`` draws it with an unseeded random op
    (TFLite built-ins RANDOM_UNIFORM / RANDOM_STANDARD_NORMAL; a seeded, stateless one would
    need the Flex delegate); ``encode`` returns the posterior parameters.
    """

    def __init__(self, model):
        self.model = model
        self.bernoulli = type(model.head).__name__.startswith("Bernoulli")

    # latent inputs of decode: {name: shape without batch}
    def latent_inputs(self) -> dict:
        return {"z": (self.model.latent_dim,)}

    def latent_example(self, rng, batch) -> dict:
        return {k: rng.standard_normal((batch, *s)).astype("float32")
                for k, s in self.latent_inputs().items()}

    def call_decode(self, latents: dict):
        return self.model.decode(latents["z"])

    def call_encode(self, x, noise=None) -> dict:
        return posterior_parameters(self.model.posterior, self.model.encoder(x))

    def encode_noise_shape(self):
        return None

    def _likelihood_outputs(self, out) -> dict:
        if self.bernoulli:
            return {"probs": out["mean"], "logits": out["params"]}
        return {"mean": out["mean"], "scale": out["scale"]}

    def _data_example(self, rng, batch):
        return rng.uniform(size=(batch, *self.model.data_shape)).astype("float32")

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        b, m = batch_size, self.model
        latents = {k: spec((b, *s), k) for k, s in self.latent_inputs().items()}
        data = (b, *m.data_shape)

        def decode(**z):
            return self._likelihood_outputs(self.call_decode(z))

        def sample(noise=None, **z):
            out = self.call_decode(z)
            if noise is None:  # unseeded random ops: TFLite built-ins, no Flex delegate
                noise = (tf.random.uniform(data) if self.bernoulli else tf.random.normal(data))
            if self.bernoulli:
                x = tf.cast(noise < out["mean"], out["mean"].dtype)
            else:
                x = out["mean"] + out["scale"] * noise
            return {"x": x, **self._likelihood_outputs(out)}

        def sample_example(rng):
            ex = self.latent_example(rng, b)
            ex["noise"] = (rng.uniform(size=data) if self.bernoulli
                           else rng.standard_normal(data)).astype("float32")
            return ex

        noise_kind = "uniform(0, 1)" if self.bernoulli else "standard normal"
        encode_inputs = {"x": spec(data, "x")}
        noise_shape = self.encode_noise_shape()
        if noise_shape is not None:
            encode_inputs["noise"] = spec((b, *noise_shape), "noise")

        def encode_example(rng):
            ex = {"x": self._data_example(rng, b)}
            if noise_shape is not None:
                ex["noise"] = rng.uniform(0.01, 0.99, size=(b, *noise_shape)).astype("float32")
            return ex

        signatures = {
            DECODE: Signature(decode, latents, lambda rng: self.latent_example(rng, b),
                              "latent -> likelihood parameters of x"),
            SAMPLE: Signature(sample, {**latents, "noise": spec(data, "noise")}, sample_example,
                              f"latent + {noise_kind} noise -> a draw x ~ p(x|z)"),
            SAMPLE_RANDOM: Signature(sample, latents, lambda rng: self.latent_example(rng, b),
                                     "latent -> a draw x ~ p(x|z) with the runtime's own "
                                     "random op", random_outputs=("x",)),
            ENCODE: Signature(lambda **kw: self.call_encode(**kw), encode_inputs, encode_example,
                              "x -> parameters of q(z|x)"),
        }
        metadata = {
            "model": type(m).__name__,
            "config": _config(m),
            "data_shape": list(m.data_shape),
            "likelihood": "bernoulli" if self.bernoulli else "gaussian",
            "sample_noise": noise_kind,
        }
        return ExportSpec(signatures, metadata)


class DLGMAdapter(LatentModelAdapter):
    """Decoder inputs ``xi_1`` (nearest the data) ... ``xi_L``; encoder outputs per layer."""

    def latent_inputs(self):
        return {f"xi_{l + 1}": (d,) for l, d in enumerate(self.model.latent_dims)}

    def call_decode(self, latents):
        return self.model.decode([latents[f"xi_{l + 1}"]
                                  for l in range(len(self.model.latent_dims))])

    def call_encode(self, x, noise=None):
        features = self.model.encoder(x)
        return {f"{k}_{l + 1}": v for l, layer in enumerate(self.model.posteriors)
                for k, v in posterior_parameters(layer, features).items()}


class CategoricalVAEAdapter(LatentModelAdapter):
    """Decoder input ``z`` one-hot [batch, N, K]; the encoder takes uniform ``noise`` [batch,
    N, K] for its Gumbel-max sample and returns ``sample`` and ``log_probs``."""

    def latent_inputs(self):
        return {"z": (self.model.num_variables, self.model.num_classes)}

    def latent_example(self, rng, batch):
        m = self.model
        idx = rng.integers(0, m.num_classes, size=(batch, m.num_variables))
        return {"z": np.eye(m.num_classes, dtype="float32")[idx]}

    def encode_noise_shape(self):
        return (self.model.num_variables, self.model.num_classes)

    def call_encode(self, x, noise=None):
        out = self.model.encode(x, noise=noise)
        return {"sample": out["sample"], "log_probs": out["log_probs"]}


@register_adapter("latent")
def latent_adapter(model):
    """The latent-model adapter that fits ``model``'s decoder inputs: one ``xi_l`` per layer
    (a DLGM, ``latent_dims``), one-hot ``z`` (``num_variables`` x ``num_classes``), or a
    Gaussian ``z`` (``latent_dim``)."""
    if hasattr(model, "latent_dims"):
        return DLGMAdapter(model)
    if hasattr(model, "num_variables") and hasattr(model, "num_classes"):
        return CategoricalVAEAdapter(model)
    return LatentModelAdapter(model)


VAEAdapter = LatentModelAdapter  # the former name
