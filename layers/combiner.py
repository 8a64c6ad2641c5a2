"""Combiner of the structured inference network (Krishnan, Shalit & Sontag 2017)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import (
    assert_finite,
    check_positive_int,
    loop_pieces,
    map_batch_pieces,
    register,
)


@register
class Combiner(keras.layers.Layer):
    r"""Mixes the previous latent with RNN summaries of the observations.

    Krishnan, Shalit & Sontag, "Structured Inference Networks for Nonlinear State Space
    Models" (2017): $h = \frac{1}{1 + J}\left(\tanh(W z_{t-1} + b) + \sum_{j=1}^{J} h_j\right)$,
    with $J = 1$ for ST-L (forward RNN) or ST-R (backward RNN) and $J = 2$ for ST-LR. The result
    parameterizes $q(z_t | z_{t-1}, x)$ (through a ``GaussianPosterior``).

    ``call(z_prev, rnn_states)`` takes ``z_prev`` ``[..., latent_dim]`` and a list of RNN
    states ``[..., units]``, and returns ``[..., units]``.

    Args:
        units: int. Width of the RNN states and of the output.

    Example:

    >>> import numpy as np
    >>> combiner = Combiner(4)
    >>> combiner(np.zeros((2, 3), "float32"), [np.ones((2, 4), "float32")]).shape
    TensorShape([2, 4])
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="tanh", name="z_to_hidden",
                                        dtype=self.dtype_policy)

    def build(self, z_prev_shape, rnn_states_shape=None):
        self.dense.build(z_prev_shape)

    def call(self, z_prev, rnn_states):
        if not rnn_states:
            raise ValueError("`rnn_states` must hold at least one RNN state.")
        for state in rnn_states:
            if state.shape[-1] is not None and state.shape[-1] != self.units:
                raise ValueError(f"RNN states must have {self.units} units, got {state.shape}.")
        total = self.dense(z_prev) + tf.add_n([tf.cast(s, self.compute_dtype)
                                               for s in rnn_states])
        return total / float(1 + len(rnn_states))

    def compute_output_spec(self, z_prev, rnn_states):
        return keras.KerasTensor((*z_prev.shape[:-1], self.units), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def fused_posterior_supported(combiner: Combiner, posterior) -> bool:
    """Whether :func:`combiner_posterior_scan` computes what ``posterior(combiner(...))``
    does: a diagonal ``GaussianPosterior`` with softplus or exp scales, plain Dense layers
    with biases, and no mixed precision (the loop runs in the layers' compute dtype)."""
    denses = [combiner.dense, posterior.loc_dense, *posterior.param_denses]
    return (posterior.covariance == "diag"
            and posterior.scale_activation in ("softplus", "exp")
            and combiner.dense.activation is keras.activations.tanh
            and all(layer.activation is keras.activations.linear
                    for layer in denses[1:])
            and all(layer.use_bias and not getattr(layer, "lora_enabled", False)
                    and getattr(layer, "quantization_mode", None) is None
                    and layer.compute_dtype == posterior.compute_dtype
                    for layer in denses)
            and combiner.compute_dtype == posterior.compute_dtype
            and posterior.compute_dtype not in ("float16", "bfloat16"))


def combiner_posterior_scan(combiner: Combiner, posterior, rnn_sum, noise, z_init,
                            num_states: int = 1, pieces: int | None = None,
                            check_features: bool = False):
    r"""$z_t = \mu_t + \sigma_t \epsilon_t$ of the structured posterior over all steps.

    The loop of ``posterior(combiner(z_{t-1}, states_t), noise=eps_t)`` (Krishnan et al.'s
    combiner feeding a diagonal Gaussian; :func:`fused_posterior_supported` says when), in
    one ``tf.scan`` over time-major tensors: ``rnn_sum`` [time, batch, units] the sum of the
    ``num_states`` RNN states at each step, ``noise`` [time, batch, d], ``z_init`` [batch, d]
    the $z_0$ the first step conditions on. Returns ``z``, ``loc`` and ``scale``, each
    [time, batch, d]; ``log_q`` follows from ``noise`` and ``scale`` in closed form.
    ``check_features``: raise (``InvalidArgumentError``, "`features` contains NaN or Inf")
    if the combiner's output, the posterior's features, is not finite, as the posterior's
    ``validate_args`` does.

    The loc and scale layers run as one product a step, and the gradient is written by hand:
    the backward loop carries only $\partial z_{t-1}$ (two products and a few elementwise
    operations a step), and every weight gradient is one product over all steps after it
    (automatic differentiation forms them step by step). Equal to the layer-by-layer loop's
    values and gradients to float rounding (tested). The batch runs as ``pieces``
    independent loops side by side (None: :func:`~zoo.layers.common.loop_pieces`, the
    threads of a CPU-only machine).
    """
    d = posterior.latent_dim
    scale_exp = posterior.scale_activation == "exp"
    min_scale = posterior.min_scale
    share = 1.0 / (1 + num_states)
    dtype = rnn_sum.dtype
    raw_layer = posterior.param_denses[0]

    def positive(raw):
        return tf.exp(0.5 * raw) if scale_exp else tf.nn.softplus(raw)

    @tf.custom_gradient
    def run(s, eps, z0, w_c, b_c, w_p, b_p):
        # features = share * (tanh(z W_c + b_c) + s): the share is folded into W_p
        w_ps = share * w_p

        def step(carry, elems):
            s_t, eps_t = elems
            act = tf.tanh(tf.matmul(carry[0], w_c) + b_c)
            params = tf.matmul(act + s_t, w_ps) + b_p
            scale = positive(params[:, d:]) + min_scale
            return params[:, :d] + scale * eps_t, params, act

        z, params, act = tf.scan(
            step, (s, eps), initializer=(z0, tf.zeros_like(tf.concat([z0, z0], -1)),
                                         tf.zeros([tf.shape(z0)[0], tf.shape(w_c)[1]], dtype)))
        loc, raw = params[..., :d], params[..., d:]
        scale = positive(raw) + min_scale
        if check_features:
            with tf.control_dependencies([assert_finite(act + s, "features")]):
                z = tf.identity(z)

        def grad(dz, dloc, dscale):
            dz, dloc, dscale = [tf.zeros_like(z) if g is None else g
                                for g in (dz, dloc, dscale)]
            # d scale / d raw: sigmoid(raw) for softplus, exp(raw / 2) / 2 for exp
            slope = 0.5 * tf.exp(0.5 * raw) if scale_exp else tf.sigmoid(raw)
            # d params = fixed + [g_z, g_z] * per_z, g_z the total gradient of z_t
            fixed = tf.concat([dloc, dscale * slope], -1)
            per_z = tf.concat([tf.ones_like(eps), eps * slope], -1)
            d_act = 1.0 - tf.square(act)

            def back(carry, elems):
                dz_t, fixed_t, per_z_t, d_act_t = elems
                g_z = dz_t + carry[0]
                g_params = fixed_t + tf.concat([g_z, g_z], -1) * per_z_t
                g_in = tf.matmul(g_params, w_ps, transpose_b=True)  # of act + s
                return (tf.matmul(g_in * d_act_t, w_c, transpose_b=True), g_params, g_in)

            g0, g_params, g_in = tf.scan(
                back, (dz, fixed, per_z, d_act),
                initializer=(tf.zeros_like(z0), tf.zeros_like(fixed[0]), tf.zeros_like(act[0])),
                reverse=True)
            g_pre = g_in * d_act
            z_prev = tf.concat([z0[None], z[:-1]], 0)

            def flat(t):
                return tf.reshape(t, [-1, tf.shape(t)[-1]])

            dw_c = tf.matmul(flat(z_prev), flat(g_pre), transpose_a=True)
            dw_p = share * tf.matmul(flat(act + s), flat(g_params), transpose_a=True)
            return (g_in, None, g0[0], dw_c, tf.reduce_sum(g_pre, [0, 1]), dw_p,
                    tf.reduce_sum(g_params, [0, 1]))

        return (z, loc, scale), grad

    def cast(v):
        return tf.cast(v, dtype)

    w_p = tf.concat([cast(posterior.loc_dense.kernel), cast(raw_layer.kernel)], 1)
    b_p = tf.concat([cast(posterior.loc_dense.bias), cast(raw_layer.bias)], 0)
    weights = (cast(combiner.dense.kernel), cast(combiner.dense.bias), w_p, b_p)
    return map_batch_pieces(lambda s, eps, z0: run(s, eps, z0[0], *weights),
                            (rnn_sum, tf.cast(noise, dtype), tf.cast(z_init, dtype)[None]),
                            loop_pieces() if pieces is None else pieces, axis=1)
