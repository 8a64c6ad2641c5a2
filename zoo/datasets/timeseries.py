"""Time-series datasets: the Nile river flow, simulated linear-Gaussian and pendulum systems.

The simulated systems return their ground-truth states and true parameters, so a filter can
be scored against the truth (and, for ``lgssm``, against the exact Kalman answer). Each split
is drawn from its own fixed seed stream, ``numpy.random.default_rng([data_seed, k])``, with
k = 0 for the parameters and k = 1, 2, 3 for train, valid and test.
"""

from __future__ import annotations

import numpy as np

from zoo.datasets._deps import require
from zoo.datasets._registry import register

SPLITS = ("train", "valid", "test")
DEFAULT_NUM_SEQUENCES = {"train": 1000, "valid": 200, "test": 200}


def _nile_frame():
    sm_datasets = require("statsmodels.datasets", "statsmodels")
    return sm_datasets.nile.load_pandas().data


def load_nile() -> np.ndarray:
    """Annual flow of the Nile at Aswan, 1871-1970 (10^8 m^3), from statsmodels.

    Returns:
        float64 array of shape [100]; element 0 is 1871 (1120.0), the mean is 919.35. The
        classic local-level series of Durbin & Koopman, "Time Series Analysis by State Space
        Methods" (2001), with a change point near 1899 (the Aswan dam).
    """
    return np.asarray(_nile_frame()["volume"], dtype=np.float64).copy()


@register(
    "nile",
    "Nile river annual flow 1871-1970 (statsmodels), one sequence of 100 values.",
    splits=("train",),
)
def nile(split: str = "train", dtype: str = "float64") -> dict:
    """The Nile series as a batch of one sequence (see ``load_nile`` for the flat array).

    Args:
        split: "train", the whole series (there is nothing to hold out).
        dtype: str. dtype of the observations.

    Returns:
        ``observations``: [1, 100, 1], flow in 10^8 m^3 (float64 by default);
        ``year``: int64 [1, 100], 1871..1970.
    """
    frame = _nile_frame()
    return {
        "observations": load_nile().reshape(1, 100, 1).astype(dtype),
        "year": np.asarray(frame["year"], dtype=np.int64).reshape(1, 100),
    }


def _split_rng(data_seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([data_seed, 1 + SPLITS.index(split)])


def _num_sequences(num_sequences: int | None, split: str) -> int:
    n = DEFAULT_NUM_SEQUENCES[split] if num_sequences is None else int(num_sequences)
    if n < 1:
        raise ValueError(f"num_sequences must be positive, got {num_sequences}.")
    return n


def lgssm_params(state_dim: int = 4, obs_dim: int = 2, data_seed: int = 0) -> dict:
    """The true parameters of ``lgssm``, float64.

    A = 0.9 U with U a random orthogonal matrix (a damped rotation, all eigenvalues of modulus
    0.9); H has N(0, 1/state_dim) entries; Q and R are diagonal with entries in [0.05, 0.15];
    m0 = 0 and P0 is the stationary covariance, the solution of P0 = A P0 A^T + Q, so every
    x_t ~ N(0, P0) and every y_t ~ N(0, H P0 H^T + R).
    """
    scipy_linalg = require("scipy.linalg", "scipy")
    rng = np.random.default_rng([data_seed, 0])
    q, r = np.linalg.qr(rng.normal(size=(state_dim, state_dim)))
    orthogonal = q * np.sign(np.diag(r))
    a = 0.9 * orthogonal
    h = rng.normal(size=(obs_dim, state_dim)) / np.sqrt(state_dim)
    q_cov = np.diag(rng.uniform(0.05, 0.15, size=state_dim))
    r_cov = np.diag(rng.uniform(0.05, 0.15, size=obs_dim))
    p0 = scipy_linalg.solve_discrete_lyapunov(a, q_cov)
    p0 = 0.5 * (p0 + p0.T)
    return {"A": a, "H": h, "Q": q_cov, "R": r_cov, "m0": np.zeros(state_dim), "P0": p0}


@register(
    "lgssm",
    "Simulated linear-Gaussian state-space sequences with true states and parameters.",
    splits=SPLITS,
    constant_keys=("A", "H", "Q", "R", "m0", "P0"),
)
def lgssm(
    split: str = "train",
    num_sequences: int | None = None,
    length: int = 50,
    state_dim: int = 4,
    obs_dim: int = 2,
    data_seed: int = 0,
    dtype: str = "float32",
) -> dict:
    """Sequences of x_0 ~ N(m0, P0), x_t = A x_{t-1} + w_t, y_t = H x_t + v_t.

    w_t ~ N(0, Q), v_t ~ N(0, R); an observation at every t = 0..T-1. The parameters are
    ``lgssm_params(state_dim, obs_dim, data_seed)`` (shared by all splits); each split has its
    own sequences.

    Args:
        split: "train", "valid" or "test".
        num_sequences: int or None. N; None gives 1,000 / 200 / 200.
        length: int. T, steps per sequence.
        state_dim: int. Dimension of x.
        obs_dim: int. Dimension of y.
        data_seed: int. Seed of the whole dataset (parameters and sequences).
        dtype: str. dtype of observations and states (the parameters are always float64).

    Returns:
        ``observations``: [N, T, obs_dim]; ``states``: [N, T, state_dim];
        ``A`` [state, state], ``H`` [obs, state], ``Q`` [state, state], ``R`` [obs, obs],
        ``m0`` [state], ``P0`` [state, state]: float64, no example axis.
    """
    params = lgssm_params(state_dim, obs_dim, data_seed)
    n, rng = _num_sequences(num_sequences, split), _split_rng(data_seed, split)
    a, h = params["A"], params["H"]
    chol_q = np.linalg.cholesky(params["Q"])
    chol_r = np.linalg.cholesky(params["R"])
    states = np.empty((n, length, state_dim))
    x = params["m0"] + rng.normal(size=(n, state_dim)) @ np.linalg.cholesky(params["P0"]).T
    for t in range(length):
        if t > 0:
            x = x @ a.T + rng.normal(size=(n, state_dim)) @ chol_q.T
        states[:, t] = x
    obs = states @ h.T + rng.normal(size=(n, length, obs_dim)) @ chol_r.T
    return {"observations": obs.astype(dtype), "states": states.astype(dtype), **params}


def pendulum_transition(
    states: np.ndarray, dt: float = 0.1, g_over_l: float = 9.81, damping: float = 0.1
) -> np.ndarray:
    """Noise-free step of ``pendulum``: states [..., 2] = (angle, angular velocity) -> next.

    Semi-implicit Euler: w' = w + dt (-g/l sin(a) - c w), a' = a + dt w'.
    """
    angle, velocity = states[..., 0], states[..., 1]
    velocity = velocity + dt * (-g_over_l * np.sin(angle) - damping * velocity)
    return np.stack([angle + dt * velocity, velocity], axis=-1)


def pendulum_measurement(states: np.ndarray) -> np.ndarray:
    """Noise-free observation of ``pendulum``: states [..., 2] -> (sin a, cos a) [..., 2]."""
    return np.stack([np.sin(states[..., 0]), np.cos(states[..., 0])], axis=-1)


@register(
    "pendulum",
    "Simulated noisy damped pendulum seen through (sin, cos) of its angle, with true states.",
    splits=SPLITS,
    constant_keys=("dt", "g_over_l", "damping", "process_std", "obs_std"),
)
def pendulum(
    split: str = "train",
    num_sequences: int | None = None,
    length: int = 100,
    dt: float = 0.1,
    g_over_l: float = 9.81,
    damping: float = 0.1,
    process_std: float = 0.3,
    obs_std: float = 0.1,
    data_seed: int = 0,
    dtype: str = "float32",
) -> dict:
    """A damped pendulum with process noise on the angular velocity, observed nonlinearly.

    x_t = (a_t, w_t); a_0 ~ U(-pi, pi), w_0 ~ N(0, 1); then ``pendulum_transition`` with
    noise added to the velocity before the angle update:
    w_{t+1} = w_t + dt (-g/l sin a_t - c w_t) + process_std sqrt(dt) eps_t,
    a_{t+1} = a_t + dt w_{t+1};
    y_t = (sin a_t, cos a_t) + obs_std * nu_t. The angle is not wrapped (it is continuous).

    Args:
        split: "train", "valid" or "test".
        num_sequences: int or None. N; None gives 1,000 / 200 / 200.
        length: int. T, steps per sequence.
        dt, g_over_l, damping: float. Step size, gravity over length, damping coefficient.
        process_std, obs_std: float. Noise scales.
        data_seed: int. Seed of the dataset.
        dtype: str. dtype of observations and states.

    Returns:
        ``observations``: [N, T, 2]; ``states``: [N, T, 2] (angle, angular velocity);
        ``dt``, ``g_over_l``, ``damping``, ``process_std``, ``obs_std``: float64 scalars.
    """
    n, rng = _num_sequences(num_sequences, split), _split_rng(data_seed, split)
    states = np.empty((n, length, 2))
    x = np.stack([rng.uniform(-np.pi, np.pi, size=n), rng.normal(size=n)], axis=-1)
    for t in range(length):
        if t > 0:
            velocity = (
                x[:, 1] + dt * (-g_over_l * np.sin(x[:, 0]) - damping * x[:, 1])
                + process_std * np.sqrt(dt) * rng.normal(size=n)
            )
            x = np.stack([x[:, 0] + dt * velocity, velocity], axis=-1)
        states[:, t] = x
    obs = pendulum_measurement(states) + obs_std * rng.normal(size=(n, length, 2))
    constants = dict(dt=dt, g_over_l=g_over_l, damping=damping, process_std=process_std,
                     obs_std=obs_std)
    return {
        "observations": obs.astype(dtype),
        "states": states.astype(dtype),
        **{k: np.float64(v) for k, v in constants.items()},
    }
