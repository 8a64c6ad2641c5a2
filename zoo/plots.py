"""Pictures of models and data, written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError("Pictures need matplotlib: pip install -e .[plot]") from err


def _as_image(x):
    x = np.asarray(x, np.float64)
    return x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x


def image_grid(images, path: str, title: str | None = None, columns: int = 8) -> str:
    """A grid of images ([n, H, W, C] in [0, 1]) saved to ``path``."""
    images = np.asarray(images)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns, rows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), images):
        ax.imshow(_as_image(image), cmap="gray", vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def image_rows(rows, labels, path: str) -> str:
    """Rows of images with a label each (e.g. data / reconstruction)."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n, len(rows) * 1.1), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(_as_image(row[j]), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def piano_rolls(rolls, labels, path: str) -> str:
    """Piano rolls ([T, 88] in [0, 1], time on x, MIDI 21..108 on y), one panel each."""
    fig, axes = plt.subplots(len(rolls), 1, figsize=(10, 2.2 * len(rolls)), squeeze=False)
    for ax, roll, label in zip(axes[:, 0], rolls, labels):
        ax.imshow(np.asarray(roll, np.float64).T, origin="lower", aspect="auto", cmap="Greys",
                  vmin=0, vmax=1, extent=[0, len(roll), 21, 109])
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_ylabel("MIDI note")
    axes[-1, 0].set_xlabel("quarter-note step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def trajectories(observed, mean, std, path: str, truth=None, title: str | None = None) -> str:
    """Each dimension over time: observations (dots), an estimate with a +/- 2 sd band, and
    optionally the ground truth."""
    observed, mean = np.asarray(observed, np.float64), np.asarray(mean, np.float64)
    dims = mean.shape[-1]
    fig, axes = plt.subplots(dims, 1, figsize=(9, 2.2 * dims), squeeze=False, sharex=True)
    t = np.arange(len(mean))
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, observed[:, i], ".", color="0.5", label="observed")
        ax.plot(t, mean[:, i], color="C0", label="estimate")
        if std is not None:
            band = 2 * np.asarray(std, np.float64)[:, i]
            ax.fill_between(t, mean[:, i] - band, mean[:, i] + band, color="C0", alpha=0.25,
                            label="+/- 2 sd")
        if truth is not None:
            ax.plot(t, np.asarray(truth)[:, i], color="C3", label="truth")
    return _finish(fig, axes, path, title)


def particle_cloud(observed, cloud, weights, mean, std, path: str, truth=None, exact=None,
                   title: str | None = None) -> str:
    """A particle filter over time, each observation dimension in a panel: the particles'
    emission means ``cloud`` [T, N, p] as dots shaded by their normalized ``weights`` [T, N],
    the weighted ``mean`` [T, p] +/- 2 ``std``, the observations, and optionally the clean
    signal ``truth`` and an ``exact`` filter's mean (the Kalman filter's)."""
    observed, cloud = np.asarray(observed, np.float64), np.asarray(cloud, np.float64)
    weights = np.asarray(weights, np.float64)
    steps, n, dims = cloud.shape
    fig, axes = plt.subplots(dims, 1, figsize=(9, 2.4 * dims), squeeze=False, sharex=True)
    t = np.arange(steps)
    shade = np.clip(weights * n, 0.0, 4.0) / 4.0  # weight relative to 1/N
    for i, ax in enumerate(axes[:, 0]):
        ax.scatter(np.repeat(t, n), cloud[:, :, i].ravel(), s=2, c="C0", linewidths=0,
                   alpha=np.clip(0.15 + 0.6 * shade.ravel(), 0.0, 1.0))
        ax.plot(t, observed[:, i], ".", color="0.3", label="observed")
        ax.plot(t, mean[:, i], color="C1", label="particle mean")
        band = 2 * np.asarray(std, np.float64)[:, i]
        ax.fill_between(t, mean[:, i] - band, mean[:, i] + band, color="C1", alpha=0.2,
                        label="+/- 2 sd")
        if truth is not None:
            ax.plot(t, np.asarray(truth)[:, i], color="C3", label="truth")
        if exact is not None:
            ax.plot(t, np.asarray(exact)[:, i], "--", color="k", lw=1, label="exact Kalman")
    return _finish(fig, axes, path, title, ncol=3)


def _finish(fig, axes, path, title, ncol: int = 1):
    """Legend and title on the first panel, then save ``fig`` to ``path`` and close it."""
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=ncol)
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
