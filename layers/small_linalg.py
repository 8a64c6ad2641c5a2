r"""Small dense linear algebra unrolled into elementwise ops, for a static matrix size m.

Two users need it. TFLite has no Cholesky, triangular-solve or matrix-inverse built-in, so
``export/`` builds its Kalman steps from these functions (they convert to STRIDED_SLICE / MUL /
SUB / SQRT / DIV / CONCATENATION / PACK). Inside an XLA while loop on CPU, ``tf.linalg``'s
Cholesky and solves of a tiny S_t each become separate runtime calls, while these fuse with
their neighbours, so :mod:`layers.kalman_inference` uses them in its compiled filter loop.

The factorization is unrolled into slices, multiply-adds, one square root and one division
per column (O(m^2) ops, m = 1..8 in practice), on a batch of matrices ``[..., m, m]``.

Accuracy: this is the textbook column Cholesky (the same rounding as LAPACK's unblocked
``potf2``), so in float32 the factor has a relative backward error of a few ulps times m;
forward substitution likewise.
"""

from __future__ import annotations

import tensorflow as tf


def static_size(x) -> int:
    """The static size of ``x``'s last axis (ValueError when it is unknown)."""
    m = x.shape[-1]
    if m is None:
        raise ValueError("Unrolled linear algebra needs a static matrix size.")
    return int(m)


_size = static_size


def small_cholesky(s):
    """Lower Cholesky factor of symmetric positive definite ``s`` [..., m, m] (m static)."""
    m = _size(s)
    cols = []  # column j holds L[j:, j], zero-padded on top to length m
    for j in range(m):
        v = s[..., j:, j]
        for k in range(j):
            v = v - cols[k][..., j:] * cols[k][..., j:j + 1]
        col = v / tf.sqrt(v[..., :1])
        if j:
            col = tf.concat([tf.zeros_like(s[..., :j, j]), col], -1)
        cols.append(col)
    return tf.stack(cols, -1)


def forward_substitution(chol, b):
    """Solve L X = B for lower-triangular L [..., m, m] and B [..., m, r]."""
    m = _size(chol)
    rows = []
    for i in range(m):
        r = b[..., i, :]
        for k in range(i):
            r = r - chol[..., i, k:k + 1] * rows[k]
        rows.append(r / chol[..., i, i:i + 1])
    return tf.stack(rows, -2)


def back_substitution(chol, b):
    """Solve L^T X = B for lower-triangular L [..., m, m] and B [..., m, r]."""
    m = _size(chol)
    rows = [None] * m
    for i in reversed(range(m)):
        r = b[..., i, :]
        for k in range(i + 1, m):
            r = r - chol[..., k, i:i + 1] * rows[k]
        rows[i] = r / chol[..., i, i:i + 1]
    return tf.stack(rows, -2)


def cholesky_solve(chol, b):
    """Solve S X = B given L = chol(S)."""
    return back_substitution(chol, forward_substitution(chol, b))


def diag_part(x):
    """Diagonal of square ``x`` [..., m, m] (tf.linalg.diag_part is a Flex op in TFLite)."""
    return tf.reduce_sum(x * tf.eye(_size(x), dtype=x.dtype), -1)


def log_det_from_cholesky(chol):
    """log det S from L = chol(S): 2 sum log diag L."""
    return 2.0 * tf.reduce_sum(tf.math.log(diag_part(chol)), -1)
