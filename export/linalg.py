"""Former home of the built-in-op linear algebra and Gaussian step of the exported filters.

They live beside the inference they serve: the unrolled Cholesky factorization and
substitutions in :mod:`zoo.layers.small_linalg`, the linear-Gaussian predict and update in
:mod:`zoo.layers.kalman_inference` (which the models' ``filter_step`` methods call). This
module re-exports them for code written against ``zoo.export.linalg``.
"""

from zoo.layers.kalman_inference import (  # noqa: F401
    GaussianStep,
    linear_gaussian_predict,
    linear_gaussian_update,
)
from zoo.layers.small_linalg import (  # noqa: F401
    back_substitution,
    cholesky_solve,
    diag_part,
    forward_substitution,
    log_det_from_cholesky,
    small_cholesky,
)
