"""Linear-Gaussian state-space model: fitted by maximum likelihood with ``model.fit``, or built
from known matrices; exact filtering, smoothing, forecasting, and a frame-by-frame step."""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import tensorflow as tf

from zoo import sequences
from zoo.contract import EvalSettings, ZooModel
from zoo.layers import kalman_inference as ki
from zoo.layers.common import math_dtype, register
from zoo.layers.kalman_filter import KalmanFilterLayer


@register
class KalmanFilterModel(ZooModel, keras.Model):
    r"""Linear-Gaussian state-space model with exact inference; ``zoo.KalmanFilter`` is this class.

    Kalman, "A New Approach to Linear Filtering and Prediction Problems" (1960); smoothing by
    Rauch, Tung & Striebel, "Maximum Likelihood Estimates of Linear Dynamic Systems" (1965).

    $$x_0 \sim N(m_0, P_0),\quad x_t = A x_{t-1} + B u_t + b + w_t,\ w_t \sim N(0, Q),\quad
    y_t = H x_t + d + v_t,\ v_t \sim N(0, R).$$

    Training maximizes the exact log-likelihood $\log p(y_{0:T-1})$ from the Kalman filter:
    the :class:`layers.kalman_filter.KalmanFilterLayer` adds $-\log p / T$ (mean over the
    batch) as the loss, so ``compile(optimizer)`` with no loss and ``fit(observations)`` is
    maximum likelihood. A dict input ``{"observations", "actions", "observed", "mask"}``
    carries actions u_t, missing frames (``observed`` 0) and padding (``mask`` 0); both of the
    last two skip the update at that step. A model whose matrices are known needs no training:
    :meth:`from_matrices`.

    ``filter``, ``smooth``, ``forecast`` and ``sample`` run exact inference on whole sequences
    (:mod:`layers.kalman_inference`); ``initial_state`` and ``filter_step`` run the same filter
    one frame at a time with TFLite built-in ops only (what ``zoo.export`` exports).

    Args:
        state_dim: int. n.
        **kwargs: the other arguments of :class:`layers.kalman_filter.KalmanFilterLayer`
            (``action_dim``, ``transition``, ``observation``, ``transition_cov``, scales,
            ``method``, ...), plus ``seed`` (int or None, for ``sample``) and Keras ``Model``
            arguments.

    Example:

    >>> import numpy as np
    >>> model = KalmanFilterModel(1, transition="identity", observation="identity",
    ...                           dtype="float64")
    >>> model.compile(keras.optimizers.Adam(0.1))
    >>> y = np.cumsum(np.random.default_rng(0).normal(size=(8, 50, 1)), 1)
    >>> history = model.fit(y, epochs=2, batch_size=8, verbose=0)
    >>> tuple(model.smooth(y).smoothed_means.shape)
    (8, 50, 1)
    >>> known = KalmanFilterModel.from_matrices(transition_matrix=[[1.0]],
    ...     observation_matrix=[[1.0]], transition_cov=[[1.0]], observation_cov=[[4.0]])
    >>> first = known.filter(y[:1]).filtered_means[0, 0, 0]  # P_0 / (P_0 + R) * y_0
    >>> bool(abs(float(first) - 0.2 * y[0, 0, 0]) < 1e-12)
    True
    """

    export_adapter = "kalman_filter"

    LAYER_ARGS = (
        "action_dim", "transition", "observation", "transition_cov", "observation_cov",
        "use_offsets", "transition_init", "transition_scale", "observation_scale",
        "initial_scale", "trainable_initial", "min_scale", "method", "square_root",
        "nan_as_missing", "validate_args", "initial_cov",
    )

    def __init__(self, state_dim: int, seed: int | None = None, **kwargs):
        if "control_dim" in kwargs:  # the former name (configs saved before 0.3)
            control_dim = kwargs.pop("control_dim")
            kwargs.setdefault("action_dim", control_dim)
        layer_kwargs = {k: kwargs.pop(k) for k in self.LAYER_ARGS if k in kwargs}
        dtype = kwargs.get("dtype")
        super().__init__(**kwargs)
        self.state_dim = state_dim
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kalman = KalmanFilterLayer(state_dim, name="kalman_filter", dtype=dtype,
                                        **layer_kwargs)
        self.layer_kwargs = {k: getattr(self.kalman, k) for k in self.LAYER_ARGS}

    @classmethod
    def from_matrices(cls, transition_matrix, observation_matrix, transition_cov,
                      observation_cov, initial_mean=None, initial_cov=None,
                      transition_offset=None, observation_offset=None, control_matrix=None,
                      dtype: str = "float64", **kwargs) -> "KalmanFilterModel":
        """A model with known parameters, ready to filter (no training): A [n, n], H [p, n],
        Q [n, n], R [p, p] (symmetric positive definite), m_0 [n] (default 0), P_0 [n, n]
        (default I), offsets b [n] and d [p] and B [n, action_dim] (default none). The
        matrices are stored exactly (up to rounding) in the model's weights, so it can also be
        fine-tuned by ``fit``, saved and exported like a trained one. ``kwargs``: further
        model arguments (``method``, ``square_root``, ``nan_as_missing``, ``seed``, ...)."""
        a = np.asarray(transition_matrix, np.float64)
        h = np.asarray(observation_matrix, np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"`transition_matrix` must be [n, n], got shape {a.shape}")
        n = a.shape[0]
        if h.ndim != 2 or h.shape[1] != n:
            raise ValueError(f"`observation_matrix` must be [p, {n}], got shape {h.shape}")
        p = h.shape[0]
        m0 = np.zeros(n) if initial_mean is None else np.asarray(initial_mean, np.float64)
        p0 = np.eye(n) if initial_cov is None else np.asarray(initial_cov, np.float64)
        params = ki.LGSSMParams(m0, p0, a, np.asarray(transition_cov, np.float64), h,
                                np.asarray(observation_cov, np.float64), transition_offset,
                                observation_offset, control_matrix)
        for name, value, shape in (("transition_cov", params.transition_cov, (n, n)),
                                   ("observation_cov", params.observation_cov, (p, p)),
                                   ("initial_mean", m0, (n,)), ("initial_cov", p0, (n, n))):
            if value.shape != shape:
                raise ValueError(f"`{name}` must have shape {list(shape)}, got "
                                 f"{list(value.shape)}")
        action_dim = None
        if control_matrix is not None:
            b = np.asarray(control_matrix, np.float64)
            if b.ndim != 2 or b.shape[0] != n:
                raise ValueError(f"`control_matrix` must be [{n}, action_dim], got {b.shape}")
            action_dim = b.shape[1]
        model = cls(n, action_dim=action_dim, transition="free", observation="free",
                    transition_cov="full", observation_cov="full", initial_cov="full",
                    min_scale=0.0,
                    use_offsets=transition_offset is not None or observation_offset is not None,
                    dtype=dtype, **kwargs)
        model.build((None, None, p))
        model.kalman.set_state_space_params(params)
        return model

    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            actions = inputs.get("actions", inputs.get("controls"))
            return (inputs["observations"], actions, inputs.get("observed"),
                    inputs.get("mask"))
        return inputs, None, None, None

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["observations"]
        self.kalman.build(tuple(input_shape))  # a second build checks the sizes only
        self.built = True

    def load_weights(self, filepath, *args, **kwargs):
        """Keras ``load_weights``; a never-called model is first built for the observation
        size stored in a ``.weights.h5`` file (read from the shape of R's weight)."""
        if not self.kalman.built and str(filepath).endswith(".weights.h5"):
            self.build((None, None, _observation_dim_in(filepath, self.kalman)))
        return super().load_weights(filepath, *args, **kwargs)

    def call(self, inputs, mask=None):
        observations, actions, observed, padding = self._unpack(inputs)
        if isinstance(mask, dict):  # Keras hands a dict input a dict of (absent) masks
            mask = mask.get("observations")
        observed = sequences.checked_flags("observed", observed)
        padding = sequences.checked_flags("mask", padding)
        return self.kalman(observations, actions=actions,
                           observed=_both(observed, padding), mask=mask)

    # ------------------------------------------------------------------------------ inference
    def state_space_params(self, dtype=None) -> ki.LGSSMParams:
        """The fitted parameters (constrained) as tensors (in ``dtype``, default the model's)."""
        return self.kalman.state_space_params(dtype)

    def _ensure_built(self, shape):
        if not self.kalman.built:
            self.build(tuple(shape))

    @property
    def _math_dtype(self) -> str:
        return math_dtype(self.kalman)

    def filter(self, observations, actions=None, observed=None, *, mask=None,
               controls=None) -> ki.FilterResult:
        """Filtered and predicted moments and log-likelihoods (:class:`FilterResult`:
        ``filtered_means``, ``filtered_covs``, ``predicted_means``, ``predicted_covs``,
        ``log_likelihood`` [batch], ``log_likelihoods`` [batch, time]).

        ``observations`` [batch, time, p]; ``actions`` [batch, time, action_dim];
        ``observed`` [batch, time] (0 = missing frame) and ``mask`` [batch, time] (0 = padding)
        both skip the update (so padding adds nothing to the log-likelihood). ``controls``: the
        deprecated name of ``actions``.

        Called eagerly, the filter runs as one compiled function (XLA for the sequential
        method; traced once per input shape and kind of arguments, reading the current
        weights on every call), after the checks on the host; inside a ``tf.function`` it is
        traced into the caller's graph."""
        return self._run("filter", observations, actions, observed, mask, controls)

    def log_likelihood(self, observations, actions=None, observed=None, *, mask=None,
                       controls=None) -> tf.Tensor:
        """log p(y_{0:T-1}) per sequence, ``[batch]``: :meth:`filter`'s ``log_likelihood``
        without materializing the moments (the same arguments; compiled when called
        eagerly)."""
        return self._run("log_likelihood", observations, actions, observed, mask, controls)

    def _run(self, what, observations, actions, observed, mask, controls):
        actions = ki.renamed_argument(actions, controls, "actions", "controls", stacklevel=4)
        eager = tf.executing_eagerly()
        shape = np.shape(observations)
        if len(shape) != 3:
            raise ValueError(f"`observations` must be [batch, time, observation_dim], got "
                             f"shape {tuple(shape)}")
        batch, steps = shape[0], shape[1]
        if steps == 0:
            raise ValueError(f"`observations` have 0 time steps (shape {tuple(shape)}): a "
                             f"sequence needs at least one step")
        observed = sequences.checked_flags("observed", observed, steps, batch)
        mask = sequences.checked_flags("mask", mask, steps, batch)
        self._ensure_built(shape)
        both = _both(observed, mask)
        if not eager:
            result = self.kalman.run_filter(observations, actions, both)
            return result if what == "filter" else result.log_likelihood
        dtype = self._math_dtype
        y = _as(observations, dtype)
        args = [y]
        if actions is not None:
            args.append(_as(actions, dtype))
        if both is not None:
            args.append(_as(both, "bool"))
        # Under a GradientTape the gradient of the XLA-compiled loops does not compile (TF's
        # while-loop gradient bookkeeping has ops XLA lacks): a recording call runs the same
        # filter as a plain graph.
        xla = not _tape_recording()
        result = self._concrete(what, actions is not None, both is not None, args, xla)(args)
        log_lik = result if what == "log_likelihood" else result.log_likelihood
        if self.kalman.validate_args and not self.kalman.nan_as_missing:
            # NaN at an observed frame makes that series' log-likelihood NaN: only then look
            # for it on the host (the check costs nothing when the data are clean).
            if not np.all(np.isfinite(log_lik.numpy())):
                ki.raise_if_nonfinite_observed(np.all(np.isfinite(y.numpy()), -1),
                                               None if both is None else args[-1].numpy())
        return result

    def _concrete(self, what, with_actions, with_observed, args, xla=True):
        """A caller of the compiled filter's concrete function for these argument shapes and
        dtypes (taking the list of argument tensors), cached: it skips ``tf.function``'s
        per-call argument binding and trace lookup (about 100 us of a 250 us call for one
        series of 100 steps) and, see :func:`_flat_caller`, the concrete function's own
        structured-signature binding (about 25 us more)."""
        cache = self.__dict__.get("_concrete_filters")
        if cache is None or len(cache) > 64:
            cache = {}
            object.__setattr__(self, "_concrete_filters", cache)
        key = (what, with_actions, with_observed, xla,
               tuple((tuple(a.shape), a.dtype) for a in args))
        fn = cache.get(key)
        if fn is None:
            fn = _flat_caller(
                self._compiled(what, with_actions, with_observed, xla).get_concrete_function(
                    *args))
            cache[key] = fn
        return fn

    def _compiled(self, what, with_actions, with_observed, xla=True):
        """The compiled filter for these kinds of arguments (cached; XLA for the sequential
        method, whose loops compile in about a second; the parallel scan would take tens of
        seconds, so it runs as a plain graph; ``xla=False``: a plain graph too, for calls
        under a gradient tape)."""
        cache = self.__dict__.get("_compiled_filters")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_compiled_filters", cache)
        key = (what, with_actions, with_observed, xla)
        if key not in cache:
            layer = self.kalman

            def run(y, *more):  # only the arguments given: fewer to canonicalize per call
                more = list(more)
                actions = more.pop(0) if with_actions else None
                observed = more.pop(0) if with_observed else None
                result = layer.run_filter(y, actions, observed)
                return result.log_likelihood if what == "log_likelihood" else result

            cache[key] = tf.function(run, jit_compile=xla and layer.method == "sequential",
                                     autograph=False)
        return cache[key]

    def smooth(self, observations, actions=None, observed=None, *, mask=None,
               controls=None) -> ki.SmootherResult:
        """Rauch-Tung-Striebel smoothed moments of x_t given all observations."""
        filtered = self.filter(observations, actions, observed, mask=mask, controls=controls)
        return ki.rts_smoother(self.state_space_params(), filtered)

    def forecast(self, observations, steps: int, actions=None, observed=None,
                 future_actions=None, *, mask=None, controls=None,
                 future_controls=None) -> ki.ForecastResult:
        """Moments of x and y for 1..``steps`` steps after the end of ``observations``."""
        future_actions = ki.renamed_argument(future_actions, future_controls, "future_actions",
                                             "future_controls")
        filtered = self.filter(observations, actions, observed, mask=mask, controls=controls)
        return ki.forecast(self.state_space_params(), filtered, steps, future_actions)

    def sample(self, observations, num_samples: int = 1, actions=None, observed=None, seed=None,
               *, mask=None, controls=None):
        """Posterior draws of x_{0:T-1} | y by forward filtering, backward sampling.

        Returns ``[num_samples, batch, time, state_dim]``; ``seed`` (an int or a
        ``keras.random.SeedGenerator``) defaults to the model's generator.
        """
        filtered = self.filter(observations, actions, observed, mask=mask, controls=controls)
        shape = (num_samples,) + tuple(filtered.filtered_means.shape)
        noise = keras.random.normal(shape, seed=seed if seed is not None else
                                    self.seed_generator, dtype=filtered.filtered_means.dtype)
        return ki.posterior_sample(self.state_space_params(), filtered, noise)

    # ------------------------------------------------------------------------------ one frame
    def initial_state(self, batch_size: int = 1, dtype="float32") -> dict:
        """The state of :meth:`filter_step` before the first frame: ``mean`` m_0 [batch, n],
        ``cov`` P_0 [batch, n, n] and ``started`` [batch] = 0 (frame 0 sees x_0 directly, with
        no prediction before it, as in :meth:`filter`)."""
        if not self.kalman.built:
            raise ValueError("the model has no parameters yet: build it (call it on "
                             "observations [batch, time, observation_dim]) first")
        par = self.state_space_params()
        m0 = tf.cast(par.initial_mean, dtype)
        p0 = tf.cast(par.initial_cov, dtype)
        return {"mean": tf.tile(m0[None], [batch_size, 1]),
                "cov": tf.tile(p0[None], [batch_size, 1, 1]),
                "started": tf.zeros([batch_size], dtype)}

    def filter_step(self, state: dict, observation, observed=None, action=None):
        r"""One frame of the filter, with TFLite built-in ops only: ``(state, y_t) -> (new
        state, outputs)``, computed in the state's dtype.

        Predict $m^- = A m + B u_t + b$, $P^- = A P A^\top + Q$ (not on the first frame), then
        update on ``observation`` [batch, p] with
        :func:`layers.kalman_inference.linear_gaussian_update` unless ``observed`` [batch] is 0
        (a missing frame, which may hold anything, NaN included: the prediction is kept and
        the log-likelihood term is 0). ``action`` [batch, action_dim] is u_t. Outputs:
        ``filtered_mean`` [batch, n], ``filtered_cov`` [batch, n, n], ``log_likelihood``
        [batch] (log p(y_t | y_<t)) and ``predicted_mean`` / ``predicted_cov``. The state's
        ``started`` must be exactly 0 or 1 (as :meth:`initial_state` and this method write
        it): the selections below are exact blends, cheaper in TFLite than SELECT ops.
        """
        mean, cov, started = state["mean"], state["cov"], state["started"]
        dtype = mean.dtype
        par = ki.LGSSMParams(*[None if t is None else tf.cast(t, dtype)
                               for t in self.state_space_params()])
        w = None
        y = tf.cast(observation, dtype)
        if observed is not None:
            # The flags first, from the inputs alone: GREATER / CAST / SELECT are not XNNPACK
            # ops, and here they run before the delegated part instead of splitting it.
            seen = tf.cast(observed, dtype) > 0.5
            w = tf.cast(seen, dtype)[:, None]
            y = tf.where(seen[:, None], y, tf.zeros_like(y))  # a finite stand-in
        go = started[:, None]
        shift = par.transition_offset
        if action is not None:
            if par.control_matrix is None:
                raise ValueError("`action` given but the model has action_dim=None")
            bu = tf.matmul(tf.cast(action, dtype), par.control_matrix, transpose_b=True)
            shift = bu if shift is None else bu + shift
        pm, pc = ki.linear_gaussian_predict(mean, cov, par.transition_matrix,
                                            par.transition_cov, shift)
        pm = go * pm + (1.0 - go) * mean
        pc = go[..., None] * pc + (1.0 - go[..., None]) * cov
        out = ki.linear_gaussian_update(pm, pc, y, par.observation_matrix,
                                        par.observation_cov, par.observation_offset)
        new_mean, new_cov, log_lik = out.mean, out.cov, out.log_likelihood
        if w is not None:
            new_mean = w * new_mean + (1.0 - w) * pm
            new_cov = w[..., None] * new_cov + (1.0 - w[..., None]) * pc
            log_lik = w[:, 0] * log_lik
        new_state = {"mean": new_mean, "cov": new_cov, "started": tf.ones_like(started)}
        return new_state, {"filtered_mean": new_mean, "filtered_cov": new_cov,
                           "log_likelihood": log_lik, "predicted_mean": pm,
                           "predicted_cov": pc}

    # ------------------------------------------------------------------------------ contract
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        if "actions" in arrays:
            return {"action_dim": int(np.asarray(arrays["actions"]).shape[-1])}
        return {}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        """``{"observations"[, "observed", "mask", "actions"]}``; NaN observations are missing
        frames (``observed`` 0)."""
        return sequences.sequence_inputs(arrays, ("observations", "mask", "observed",
                                                  "actions")), None

    @classmethod
    def example_lengths(cls, x):
        return sequences.sequence_steps(x)

    @classmethod
    def prepare_batch(cls, x):
        return sequences.trim_to_longest(x)

    def validate_data(self, arrays: dict) -> None:
        """NaN observations are missing frames (the filter predicts through them); NaN in any
        other array is an error naming it."""
        sequences.check_finite(arrays, type(self).__name__)

    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """The exact log-likelihood (mean per sequence and per real step) and the fitted
        parameters."""
        filtered = self.filter(x["observations"], x.get("actions"), x.get("observed"),
                               mask=x.get("mask"))
        log_lik = np.asarray(filtered.log_likelihood)
        steps = sequences.sequence_steps(x)
        return {"log_likelihood": float(np.mean(log_lik)),
                "nll_per_step": float(-np.sum(log_lik) / np.sum(steps)),
                "likelihood_examples": int(len(log_lik)),
                "parameters": {k: np.asarray(v).tolist() for k, v in
                               self.state_space_params()._asdict().items() if v is not None}}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        """The first example's observations and filtered signal H m_t +/- 2 sd."""
        from zoo import plots

        one, length = sequences.first_sequence(x)
        filtered = self.filter(one["observations"], one.get("actions"), one.get("observed"),
                               mask=one.get("mask"))
        h = np.asarray(self.state_space_params().observation_matrix, np.float64)
        means = np.asarray(filtered.filtered_means)[0, :length] @ h.T
        covs = np.asarray(filtered.filtered_covs)[0, :length]
        std = np.sqrt(np.einsum("pi,tij,pj->tp", h, covs, h))
        obs = np.asarray(one["observations"], np.float64)[0, :length].copy()
        if "observed" in one:
            obs[np.asarray(one["observed"])[0, :length] <= 0] = np.nan
        return [plots.trajectories(obs, means, std, os.path.join(out_dir, "filter.png"),
                                   title="observations, filtered signal H m_t +/- 2 sd")]

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, seed=self.seed, **self.layer_kwargs)
        return config


def _as(x, dtype):
    """``x`` as a tensor of ``dtype`` (NumPy converted on the host, tensors cast).

    NumPy arrays are tested first and converted with ``tf.constant``: ``tf.is_tensor`` (a
    runtime-checkable ``Protocol`` check) and ``tf.convert_to_tensor``'s dispatch cost about
    10 us of a 150 us filter call on one short series."""
    if isinstance(x, np.ndarray):
        return tf.constant(x if x.dtype == dtype else x.astype(dtype))
    if isinstance(x, tf.Tensor) or tf.is_tensor(x):
        return x if x.dtype == dtype else tf.cast(x, dtype)
    return tf.constant(np.asarray(x, dtype))


def _tape_check():
    """A function telling whether a gradient tape is active: TensorFlow's private
    ``could_possibly_record``; where it is missing, one that always says yes (the plain-graph
    call is correct either way, only slower)."""
    try:
        from tensorflow.python.eager import record
    except ImportError:
        record = None
    check = getattr(record, "could_possibly_record", None)
    return check if callable(check) else (lambda: True)


_tape_recording = _tape_check()


def _flat_caller(concrete):
    """``args -> concrete(*args)`` for a list of tensors matching ``concrete``'s signature.

    ``ConcreteFunction._call_flat(tensors, captured_inputs)`` is the call its public
    ``__call__`` makes after binding the arguments to the structured signature (about 25 us
    per call); the arguments here are already tensors of the traced shapes and dtypes, so
    the binding is skipped. ``_call_flat`` is private TensorFlow API (this signature in TF
    2.21, the pinned version): where it is missing or takes other arguments, the public call
    is used."""
    flat = getattr(concrete, "_call_flat", None)
    if flat is not None:
        try:
            params = list(inspect.signature(flat).parameters)
        except (TypeError, ValueError):
            params = []
        if params[:2] == ["tensor_inputs", "captured_inputs"]:
            # captured_inputs is read per call: it lists the variables' current handles
            return lambda args: flat(args, concrete.captured_inputs)
    return lambda args: concrete(*args)


def _observation_dim_in(filepath, layer) -> int:
    """The observation size p of the Kalman layer saved in a ``.weights.h5`` file: the shape
    of its ``raw_observation_scale`` weight ([p] diag, [p (p + 1) / 2] full), whose place in
    the layer's variables follows ``KalmanFilterLayer.build``'s order."""
    import h5py

    index = (layer.transition != "identity") + (layer.observation == "free") + 1
    try:
        with h5py.File(filepath, "r") as f:
            size = int(f[f"kalman/vars/{index}"].shape[0])
    except (OSError, KeyError) as e:
        raise ValueError(f"{filepath} holds no Kalman filter weights this model can read "
                         f"({e}); build the model (call it on observations) before loading, "
                         f"or check the file") from None
    if layer.observation_cov == "diag":
        return size
    p = int(round((np.sqrt(8 * size + 1) - 1) / 2))
    if p * (p + 1) // 2 != size:
        raise ValueError(f"{filepath}: R's weight has {size} entries, not p (p + 1) / 2")
    return p


def _both(observed, mask):
    """Steps to update on: observed and not padding (None: all)."""
    if observed is None:
        return mask
    if mask is None:
        return observed
    return tf.logical_and(tf.cast(observed, tf.bool), tf.cast(mask, tf.bool))


# ``from zoo import KalmanFilter`` is this model (the layer is ``KalmanFilterLayer``).
KalmanFilter = KalmanFilterModel
