"""Export adapters of the Kalman filter family: ``"kalman_filter"`` (``KalmanFilterModel``) and
``"lstm_kalman_filter"`` (``LSTMKalmanFilter``).

Both export ``init_state`` and ``filter_step`` by tracing the model's own public
``initial_state`` and ``filter_step`` (TFLite built-in ops only); the adapters only lay the
state out as tensors and name the outputs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.export.adapters import model_config, register_adapter
from zoo.export.protocol import (
    FILTER_STEP,
    INIT_STATE,
    STATE_LAYOUT_DOC,
    ExportSpec,
    Signature,
    pack_state,
    spec,
    state_layout,
    state_size,
    unpack_state,
)


def _std(cov):
    """Standard deviations from covariances [b, n, n] with built-in ops (a masked sum: TFLite's
    diag_part is a Flex op)."""
    n = int(cov.shape[-1])
    return tf.sqrt(tf.maximum(tf.reduce_sum(cov * tf.eye(n, dtype=cov.dtype), -1), 0.0))


@register_adapter("kalman_filter")
class KalmanFilterAdapter:
    r"""``init_state`` and ``filter_step`` of a linear-Gaussian state-space model, built-in ops.

    ``filter_step(state, observation, observed[, action]) -> state, estimate, uncertainty,
    log_likelihood``; ``init_state() -> state``: the model's ``initial_state`` /
    ``filter_step`` (float32) with the state packed into one tensor.

    The state held by the app is one float32 tensor ``state`` [b, n + n*n + 1], packed per
    batch row as (offsets also in the sidecar's ``state_layout``)::

        state[:, 0 : n]                mean     m_t, the filtered mean (m_0 before frame 0)
        state[:, n : n + n*n]          cov      P_t, row-major: P[i, j] at n + i*n + j
        state[:, n + n*n]              started  0.0 before the first frame, then 1.0

    The app feeds the output ``state`` back as the next input unchanged (it never has to
    read it; one copy in and one out per frame instead of one per piece). ``observed`` 0
    marks a missing frame, whose observation may hold anything, NaN included. Outputs:
    ``state``, ``estimate`` [b, n] (the filtered mean), ``uncertainty`` [b, n] (filtered
    standard deviations) and ``log_likelihood`` [b] (log p(y_t | y_<t), for gating outliers).
    """

    def __init__(self, model):
        self.model = model

    def layout(self) -> dict:
        n = self.model.state_dim
        return state_layout([("mean", (n,)), ("cov", (n, n)), ("started", ())])

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        n = m.state_dim
        p, k = m.kalman.observation_dim, m.kalman.action_dim
        layout = self.layout()
        state = {"state": spec((b, state_size(layout)), "state")}
        frame = {"observation": spec((b, p), "observation"), "observed": spec((b,), "observed")}
        if k:
            frame["action"] = spec((b, k), "action")

        def init_state():
            return {"state": pack_state(m.initial_state(b, tf.float32), layout)}

        def filter_step(state, observation, observed, action=None):
            new, out = m.filter_step(unpack_state(state, layout), observation, observed, action)
            mean = out["filtered_mean"]
            return {"state": pack_state(new, layout), "estimate": mean,
                    "uncertainty": _std(out["filtered_cov"]),
                    "log_likelihood": out["log_likelihood"]}

        def step_example(rng):
            s = init_state()["state"].numpy()
            s[:, layout["started"]["offset"]] = 1.0
            ex = {"state": s, "observation": rng.standard_normal((b, p)).astype("float32"),
                  "observed": np.ones((b,), "float32")}
            if k:
                ex["action"] = rng.standard_normal((b, k)).astype("float32")
            return ex

        signatures = {
            INIT_STATE: Signature(init_state, {}, lambda rng: {},
                                  "the state before the first frame: [m_0 | P_0 | 0]"),
            FILTER_STEP: Signature(filter_step, {**state, **frame}, step_example,
                                   "state + observation y_t, observed flag [+ action u_t] -> "
                                   "new state, filtered mean and standard deviations of x_t"),
        }
        metadata = {"model": type(m).__name__, "config": model_config(m), "state_dim": n,
                    "observation_dim": p, "action_dim": k or 0,
                    "state_layout": {"state": layout},
                    "state_layout_doc": STATE_LAYOUT_DOC,
                    "estimate": "E[x_t | y_0..y_t]",
                    "uncertainty": "sqrt(diag Cov[x_t | y_0..y_t])"}
        return ExportSpec(signatures, metadata, state=tuple(state))


@register_adapter("lstm_kalman_filter")
class LSTMKalmanFilterAdapter:
    r"""``init_state`` and ``filter_step`` of the LSTM Kalman filter: the model's own step
    (LSTM transition with its Jacobian, learned Q_t and R_t, the built-in-op Kalman update).

    State tensors: ``mean`` [b, n], ``cov`` [b, n, n] and the (h, c) pairs of the three LSTMs
    (``lstm_a_h`` ... ``lstm_r_c``). Frame inputs: ``observation`` [b, p] and ``observed``
    [b] (0 = missing: the update is skipped and the R-LSTM sees H x^-). Outputs add
    ``estimate`` (filtered mean), ``uncertainty`` (standard deviations), the learned
    ``process_variance`` / ``observation_variance`` and ``log_likelihood``.
    """

    def __init__(self, model):
        self.model = model

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        n, p = m.state_dim, m.observation_dim
        state0 = _flat_state(m.initial_state(b))
        state = {k: spec(v.shape, k) for k, v in state0.items()}
        frame = {"observation": spec((b, p), "observation"), "observed": spec((b,), "observed")}

        def init_state():
            return {k: tf.identity(v) for k, v in _flat_state(m.initial_state(b)).items()}

        def filter_step(observation, observed, **flat):
            new, out = m.filter_step(_nested_state(flat), observation, observed)
            return {**_flat_state(new), "estimate": out["filtered_mean"],
                    "uncertainty": _std(out["filtered_cov"]),
                    "process_variance": out["process_variance"],
                    "observation_variance": out["observation_variance"],
                    "log_likelihood": out["log_likelihood"]}

        def step_example(rng):
            s = {k: v.numpy() for k, v in init_state().items()}
            for k in s:
                if k.startswith("lstm"):
                    s[k] = rng.uniform(-0.5, 0.5, s[k].shape).astype("float32")
            return {**s, "observation": rng.standard_normal((b, p)).astype("float32"),
                    "observed": np.ones((b,), "float32")}

        signatures = {
            INIT_STATE: Signature(init_state, {}, lambda rng: {},
                                  "the state before the first frame"),
            FILTER_STEP: Signature(filter_step, {**state, **frame}, step_example,
                                   "state + observation z_t, observed flag -> new state, "
                                   "filtered mean and standard deviations, learned Q_t and "
                                   "R_t diagonals"),
        }
        metadata = {"model": type(m).__name__, "config": model_config(m), "state_dim": n,
                    "observation_dim": p, "estimate": "filtered mean of x_t",
                    "uncertainty": "sqrt(diag P_t)"}
        return ExportSpec(signatures, metadata, state=tuple(state))


def _flat_state(state: dict) -> dict:
    """LSTM-KF state {mean, cov, lstm_a: [h, c], ...} -> {mean, cov, lstm_a_h, lstm_a_c, ...}."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, (list, tuple)):
            flat[f"{key}_h"], flat[f"{key}_c"] = value
        else:
            flat[key] = value
    return flat


def _nested_state(flat: dict) -> dict:
    nested = {}
    for key, value in flat.items():
        if key.endswith(("_h", "_c")) and key.startswith("lstm"):
            nested.setdefault(key[:-2], [None, None])[0 if key.endswith("_h") else 1] = value
        else:
            nested[key] = value
    return nested
