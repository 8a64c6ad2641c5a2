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
