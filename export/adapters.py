"""Adapters that give the zoo's models the :class:`export.protocol.Exportable` protocol.

Each adapter builds the signatures from the model's public pieces only (``decode``,
``encode``, ``head``, ``state_space_params``...), so ``export/`` stays model-agnostic and a
model that implements ``export_spec`` itself needs no adapter.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.export import linalg
from zoo.export.protocol import (
    DECODE,
    STATE_LAYOUT_DOC,
    ENCODE,
    FILTER_STEP,
    INIT_STATE,
    SAMPLE,
    SAMPLE_RANDOM,
    ExportSpec,
    Signature,
    spec,
)

_ADAPTERS = []  # (class path "module.Class", adapter class), checked in order


def register_adapter(class_path: str):
    """Decorator: use this adapter for instances of the class at ``class_path``."""
    def wrap(adapter):
        _ADAPTERS.append((class_path, adapter))
        return adapter
    return wrap


def _class(path):
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def adapter_for(model):
    """The adapter of ``model``'s class; TypeError if the model is not exportable."""
    for path, adapter in _ADAPTERS:
        cls = _class(path)
        if cls is not None and isinstance(model, cls):
            return adapter(model)
    raise TypeError(
        f"{type(model).__name__} is not exportable: implement "
        f"`export_spec(batch_size) -> export.protocol.ExportSpec` on it, or register an adapter "
        f"with `export.adapters.register_adapter`."
    )


def _config(model) -> dict:
    return {k: v for k, v in model.get_config().items()
            if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}


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


@register_adapter("zoo.vae.VAE")
class VAEAdapter(LatentModelAdapter):
    pass


@register_adapter("zoo.dlgm.DLGM")
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


@register_adapter("zoo.categorical_vae.CategoricalVAE")
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


# ---------------------------------------------------------------------------- packed state
def state_layout(parts) -> dict:
    """Offsets of named pieces in one flat state vector: ``parts`` is ``[(name, shape), ...]``
    in order; returns ``{name: {"offset", "size", "shape"}}`` (row-major pieces, no padding).

    One packed ``state`` tensor costs one copy in and one out per frame instead of one per
    piece (what an app pays in LiteRT), and the app can feed the output buffer back as is.
    """
    layout, offset = {}, 0
    for name, shape in parts:
        shape = [int(s) for s in shape]
        size = int(np.prod(shape, dtype=np.int64))
        layout[name] = {"offset": offset, "size": size, "shape": shape}
        offset += size
    return layout


def state_size(layout: dict) -> int:
    return max((v["offset"] + v["size"] for v in layout.values()), default=0)


def unpack_state(state, layout: dict) -> dict:
    """The named pieces of a packed ``state`` [batch, size] (tensors, built-in slices)."""
    b = state.shape[0]
    return {k: tf.reshape(state[:, v["offset"]:v["offset"] + v["size"]], [b, *v["shape"]])
            for k, v in layout.items()}


def pack_state(pieces: dict, layout: dict):
    """Inverse of :func:`unpack_state`: one [batch, size] tensor from the named pieces."""
    b = next(iter(pieces.values())).shape[0]
    return tf.concat([tf.reshape(pieces[k], [b, v["size"]]) for k, v in layout.items()], -1)


# ---------------------------------------------------------------------------- Kalman filter
@register_adapter("zoo.kalman_filter.KalmanFilterModel")
class KalmanFilterAdapter:
    r"""``init_state`` and ``filter_step`` of a linear-Gaussian state-space model, built-in ops.

    ``filter_step(state, observation, observed[, action]) -> state, estimate, uncertainty,
    log_likelihood``; ``init_state() -> state``.

    The state held by the app is one float32 tensor ``state`` [b, n + n*n + 1], packed per
    batch row as (offsets also in the sidecar's ``state_layout``)::

        state[:, 0 : n]                mean     m_t, the filtered mean (m_0 before frame 0)
        state[:, n : n + n*n]          cov      P_t, row-major: P[i, j] at n + i*n + j
        state[:, n + n*n]              started  0.0 before the first frame, then 1.0

    The app feeds the output ``state`` back as the next input unchanged (it never has to
    read it; one copy in and one out per frame instead of one per piece). One step: predict
    $m^- = A m + B u + b$, $P^- = A P A^\top + Q$ (skipped on the first frame, where $y_0$
    sees $x_0$ directly, as in the full-sequence filter), then update on ``observation``
    with :func:`export.linalg.linear_gaussian_update` unless ``observed`` is 0 (a missing
    frame, whose observation may hold anything, NaN included: the prediction is kept and the
    log-likelihood is 0). Outputs: ``state``, ``estimate`` [b, n] (the filtered mean, the same
    numbers as the state's mean), ``uncertainty`` [b, n] (filtered standard deviations: the
    square root of the covariance diagonal) and ``log_likelihood`` [b] (log p(y_t | y_<t), for
    gating outliers). Computed in float32. ``started`` must be exactly 0 or 1 (as
    ``init_state`` and ``filter_step`` write it).
    """

    def __init__(self, model):
        self.model = model

    def _params(self):
        p = self.model.state_space_params()
        return type(p)(*[None if t is None else tf.cast(t, tf.float32) for t in p])

    def layout(self) -> dict:
        n = self.model.kalman.state_dim
        return state_layout([("mean", (n,)), ("cov", (n, n)), ("started", ())])

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        n, p, k = m.kalman.state_dim, m.kalman.obs_dim, m.kalman.control_dim
        layout = self.layout()
        size = state_size(layout)
        state = {"state": spec((b, size), "state")}
        frame = {"observation": spec((b, p), "observation"), "observed": spec((b,), "observed")}
        if k:
            frame["action"] = spec((b, k), "action")

        def init_state():
            par = self._params()
            return {"state": pack_state({"mean": tf.tile(par.initial_mean[None], [b, 1]),
                                         "cov": tf.tile(par.initial_cov[None], [b, 1, 1]),
                                         "started": tf.zeros([b], tf.float32)}, layout)}

        def filter_step(state, observation, observed, action=None):
            # The flags first, from the inputs alone: GREATER / CAST / SELECT are not XNNPACK
            # ops, and here they run before the delegated part instead of splitting it.
            seen = observed > 0.5
            w = tf.cast(seen, tf.float32)[:, None]
            # A missing frame may hold anything (NaN included): update on a finite stand-in.
            y = tf.where(seen[:, None], observation, tf.zeros_like(observation))
            par = self._params()
            s = unpack_state(state, layout)
            mean, cov, go = s["mean"], s["cov"], s["started"][:, None]
            shift = par.transition_offset
            if action is not None:
                bu = tf.matmul(action, par.control_matrix, transpose_b=True)
                shift = bu if shift is None else bu + shift
            pm, pc = linalg.linear_gaussian_predict(mean, cov, par.transition_matrix,
                                                    par.transition_cov, shift)
            # `started` is exactly 0 or 1 and so is w: these blends are exact selections.
            pm = go * pm + (1.0 - go) * mean
            pc = go[..., None] * pc + (1.0 - go[..., None]) * cov
            out = linalg.linear_gaussian_update(pm, pc, y, par.observation_matrix,
                                                par.observation_cov, par.observation_offset)
            new_mean = w * out.mean + (1.0 - w) * pm
            new_cov = w[..., None] * out.cov + (1.0 - w[..., None]) * pc
            diag = linalg.diag_part(new_cov)
            return {"state": tf.concat([new_mean, tf.reshape(new_cov, [b, n * n]),
                                        tf.ones_like(go)], -1),
                    "estimate": new_mean, "uncertainty": tf.sqrt(tf.maximum(diag, 0.0)),
                    "log_likelihood": w[:, 0] * out.log_likelihood}

        def init_example(rng):
            return {}

        def step_example(rng):
            s = init_state()["state"].numpy()
            s[:, layout["started"]["offset"]] = 1.0
            ex = {"state": s, "observation": rng.standard_normal((b, p)).astype("float32"),
                  "observed": np.ones((b,), "float32")}
            if k:
                ex["action"] = rng.standard_normal((b, k)).astype("float32")
            return ex

        signatures = {
            INIT_STATE: Signature(init_state, {}, init_example,
                                  "the state before the first frame: [m_0 | P_0 | 0]"),
            FILTER_STEP: Signature(filter_step, {**state, **frame}, step_example,
                                   "state + observation y_t, observed flag [+ action u_t] -> "
                                   "new state, filtered mean and standard deviations of x_t"),
        }
        metadata = {"model": type(m).__name__, "config": _config(m), "state_dim": n,
                    "obs_dim": p, "control_dim": k or 0,
                    "state_layout": {"state": layout},
                    "state_layout_doc": STATE_LAYOUT_DOC,
                    "estimate": "E[x_t | y_0..y_t]",
                    "uncertainty": "sqrt(diag Cov[x_t | y_0..y_t])"}
        return ExportSpec(signatures, metadata, state=tuple(state))


# ---------------------------------------------------------------------------- DKF / DMM
@register_adapter("zoo.deep_state_space.DeepStateSpaceModel")
class DeepStateSpaceAdapter(LatentModelAdapter):
    """``decode`` / ``sample`` / ``sample_random`` of the emission p(x_t | z_t), and for causal
    inference networks (``rnn``, ``st-l``, ``indep``) ``init_state`` + ``filter_step`` from the
    model's own ``initial_state`` and ``filter_step``.

    Frame inputs: ``observation`` [b, *observation_shape] and ``observed`` [b] (1 = present,
    0 = missing). Outputs: the new state, ``estimate`` (posterior mean of z_t), ``uncertainty``
    (its standard deviations) and ``observation_mean`` (the emission of the mean).
    """

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        from zoo.deep_state_space import CAUSAL

        base = super().export_spec(batch_size)
        signatures = {k: v for k, v in base.signatures.items() if k != ENCODE}
        m, b = self.model, batch_size
        metadata = {**base.metadata, "latent_dim": m.latent_dim, "inference": m.inference}
        if m.inference not in CAUSAL:
            metadata["filter"] = (f"none: inference={m.inference!r} looks at future frames")
            return ExportSpec(signatures, metadata)
        state0 = m.initial_state(b)
        state = {k: spec(v.shape, k) for k, v in state0.items()}
        frame = {"observation": spec((b, *m.observation_shape), "observation"),
                 "observed": spec((b,), "observed")}

        def filter_step(observation, observed, **st):
            new_state, out = m.filter_step(st, observation, observed)
            return {**new_state, "estimate": out["latent_mean"],
                    "uncertainty": out["latent_scale"],
                    "observation_mean": tf.reshape(out["observation_mean"],
                                                   observation.shape)}

        def step_example(rng):
            ex = {k: rng.uniform(-0.5, 0.5, v.shape).astype("float32")
                  for k, v in state0.items()}
            ex["observation"] = self._data_example(rng, b)
            ex["observed"] = np.ones((b,), "float32")
            return ex

        signatures[INIT_STATE] = Signature(lambda: m.initial_state(b), {}, lambda rng: {},
                                           "the state before the first frame")
        signatures[FILTER_STEP] = Signature(
            filter_step, {**state, **frame}, step_example,
            "state + frame x_t (+ observed flag) -> new state, mean and standard deviations "
            "of q(z_t | x_1..x_t), emission mean")
        metadata.update(estimate="E_q[z_t | x_1..x_t]", uncertainty="std of q(z_t | x_1..x_t)")
        return ExportSpec(signatures, metadata, state=tuple(state))


# ---------------------------------------------------------------------------- LSTM-KF
@register_adapter("zoo.lstm_kalman_filter.LSTMKalmanFilter")
class LSTMKalmanFilterAdapter:
    r"""``init_state`` and ``filter_step`` of the LSTM Kalman filter, built-in ops only.

    The step is the model's (LSTM transition with the skip connection, its Jacobian $F_t$ by
    autodiff, learned diagonal $Q_t$ and $R_t$), with the update done by
    :func:`export.linalg.linear_gaussian_update` instead of the Cholesky solve of
    ``layers.kalman_inference.update_step`` (a Flex op in TFLite): the same posterior, in the
    standard rather than the Joseph form. State: ``mean``, ``cov`` and the (h, c) pairs of the
    three LSTMs, ``lstm_a_h`` ... ``lstm_r_c``. Outputs add ``estimate`` (the filtered mean),
    ``uncertainty`` (standard deviations), the learned variances and ``log_likelihood``.
    """

    LSTMS = ("lstm_a", "lstm_q", "lstm_r")

    def __init__(self, model):
        self.model = model

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        n, p, u = m.state_dim, m.observation_dim, m.lstm_units
        state = {"mean": spec((b, n), "mean"), "cov": spec((b, n, n), "cov")}
        for name in self.LSTMS:
            state[f"{name}_h"] = spec((b, u), f"{name}_h")
            state[f"{name}_c"] = spec((b, u), f"{name}_c")
        frame = {"observation": spec((b, p), "observation")}

        def init_state():
            s = m.initial_state(b)
            out = {"mean": tf.identity(s["mean"]), "cov": tf.identity(s["cov"])}
            for name in self.LSTMS:
                out[f"{name}_h"], out[f"{name}_c"] = s[name]
            return out

        def filter_step(mean, cov, observation, **lstm):
            def cell(name, x):
                h, (h2, c2) = getattr(m, name)(x, [lstm[f"{name}_h"], lstm[f"{name}_c"]])
                return h, {f"{name}_h": h2, f"{name}_c": c2}

            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(mean)
                h_a, new_a = cell("lstm_a", mean)
                pred_mean = mean + m.out_a(h_a)
            jacobian = tape.batch_jacobian(pred_mean, mean)
            h_q, new_q = cell("lstm_q", pred_mean)
            q = m._diag_variance(m.out_q(h_q))
            h_r, new_r = cell("lstm_r", observation)
            r = m._diag_variance(m.out_r(h_r))
            pred_cov = linalg.linear_gaussian_predict(
                tf.zeros_like(mean), cov, jacobian, q[..., None] * tf.eye(n))[1]
            out = linalg.linear_gaussian_update(pred_mean, pred_cov, observation,
                                                m._h, r[..., None] * tf.eye(p))
            return {"mean": out.mean, "cov": out.cov, **new_a, **new_q, **new_r,
                    "estimate": out.mean,
                    "uncertainty": tf.sqrt(tf.maximum(linalg.diag_part(out.cov), 0.0)),
                    "process_variance": q, "observation_variance": r,
                    "log_likelihood": out.log_likelihood}

        def step_example(rng):
            s = {k: v.numpy() for k, v in init_state().items()}
            for k in s:
                if k.startswith("lstm"):
                    s[k] = rng.uniform(-0.5, 0.5, s[k].shape).astype("float32")
            return {**s, "observation": rng.standard_normal((b, p)).astype("float32")}

        signatures = {
            INIT_STATE: Signature(init_state, {}, lambda rng: {},
                                  "the state before the first frame"),
            FILTER_STEP: Signature(filter_step, {**state, **frame}, step_example,
                                   "state + observation z_t -> new state, filtered mean and "
                                   "standard deviations, learned Q_t and R_t diagonals"),
        }
        metadata = {"model": type(m).__name__, "config": _config(m), "state_dim": n,
                    "obs_dim": p, "estimate": "filtered mean of x_t",
                    "uncertainty": "sqrt(diag P_t)"}
        return ExportSpec(signatures, metadata, state=tuple(state))
