"""What every zoo model tells the trainer, the evaluator, the pictures and the exporter.

The training package (``zoo.training``), ``zoo-evaluate`` and ``zoo-export`` never ask which
kind of model they hold: they call these methods. A zoo model (or its family's base class)
inherits :class:`ZooModel` next to ``keras.Model`` and overrides what differs::

    class NADE(ZooModel, keras.Model):
        export_adapter = "autoregressive"          # a name in zoo.export's adapter registry

        @classmethod
        def data_kwargs(cls, arrays):              # constructor arguments from the data
            return {"input_dim": int(np.prod(arrays["image"].shape[1:]))}

        @classmethod
        def fit_inputs(cls, arrays):               # (x, y) of fit / evaluate
            return arrays["image"].reshape(len(arrays["image"]), -1), None

        def evaluation(self, x, y, arrays, settings):   # beyond Keras' metrics
            return {"test_nll": float(-np.mean(self.log_prob(x)))}

        def pictures(self, x, arrays, out_dir, settings):
            from zoo import plots
            return [plots.image_grid(..., os.path.join(out_dir, "samples.png"))]

and one entry in :mod:`zoo.registry`. The arrays are one split of ``zoo.datasets.load_arrays``
(a dict of NumPy arrays, examples on axis 0; e.g. ``image``, or ``observations``, ``mask``,
``observed``, ``actions``, ``states``).

Vocabulary of the sequence models (one for all of them):

- ``observations`` [batch, time, ...]; ``mask`` [batch, time]: 1 for a real step, 0 for padding
  after the end of a shorter sequence (Keras' meaning of a mask); ``observed`` [batch, time]:
  1 when the frame was seen, 0 when it is missing (the filter predicts through it);
  ``actions`` [batch, time, action_dim]: known inputs (controls) that drive the transition;
  ``time_gaps`` [batch, time].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How a run evaluates: K importance samples, the seed of all evaluation noise and of the
    example subset, the batch size, the split's name and how its examples were chosen."""

    num_samples: int = 100
    seed: int = 0
    batch_size: int = 100
    split: str = "test"
    selection: str = "all"


class ZooModel:
    """Mixin of the model contract; defaults suit an unsupervised model fed one array."""

    #: Name of the adapter in ``zoo.export.adapters`` that exports this model (None: the
    #: model implements ``export_spec`` itself, or does not export).
    export_adapter: ClassVar[str | None] = None
    #: Whether dynamic binarization (``data.binarize=dynamic``) resamples ``x`` every epoch.
    binarizes_inputs: ClassVar[bool] = False
    #: Whether ``train.jit`` (XLA) can compile the train step.
    supports_jit: ClassVar[bool] = True
    #: Whether ``fit(..., sample_weight=w)`` weights the examples' losses; when False it is
    #: refused instead of silently ignored.
    supports_sample_weight: ClassVar[bool] = False

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str):
        """A trained model shipped with the package (keras-hub's convention), e.g.
        ``VAE.from_preset("vae_mnist_burda_k1")``; ``zoo.presets.list_presets()`` lists them
        and an unknown name raises ValueError listing them. Its files (model card, verified
        TFLite files) are in ``zoo.presets.preset_files(name)``."""
        from zoo import presets

        return presets.load(name, expected_class=cls)

    # ------------------------------------------------------------------ sample weights
    def _checked_weights(self, y, sample_weight):
        if sample_weight is None:
            return y
        if not self.supports_sample_weight:
            raise ValueError(f"{type(self).__name__} does not support `sample_weight`; "
                             f"train without it (or subsample the data).")
        if y is None:  # Keras drops sample weights when there is no y: give it a stand-in
            y = np.zeros(len(sample_weight), "float32")
        return y

    def fit(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        y = self._checked_weights(y, sample_weight)
        return super().fit(x, y, *args, sample_weight=sample_weight, **kwargs)

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        y = self._checked_weights(y, sample_weight)
        return super().evaluate(x, y, *args, sample_weight=sample_weight, **kwargs)

    # ------------------------------------------------------------------ data -> model
    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        """Constructor arguments that come from the training arrays (shapes, sizes)."""
        return {}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        """``(x, y)`` as ``fit`` / ``evaluate`` take them from one split's arrays (``y`` None
        for a model that learns from ``x`` alone). ``x`` is an array or a dict of arrays with
        examples on axis 0."""
        raise NotImplementedError(f"{cls.__name__} does not say how to read a dataset")

    @classmethod
    def example_lengths(cls, x):
        """The real length of each example of ``x`` (sequence models: steps without padding),
        for ``train.bucket_by_length``; None where examples have no length."""
        return None

    @classmethod
    def has_example_lengths(cls) -> bool:
        return cls.example_lengths.__func__ is not ZooModel.example_lengths.__func__

    @classmethod
    def prepare_batch(cls, x):
        """A training or validation batch of ``x`` before it reaches the model (e.g. padded
        sequences cut to the batch's longest). Runs inside ``tf.data``."""
        return x

    @classmethod
    def data_defaults(cls, model_config: dict, data_config: dict, user_data: dict) -> dict:
        """The data section after the model's say (e.g. no binarization for a Gaussian
        likelihood unless the user asked for one). ``user_data``: what the user set."""
        return data_config

    def compile_kwargs(self) -> dict:
        """Extra ``compile`` arguments (a supervised model's loss)."""
        return {}

    def default_callbacks(self) -> list:
        """Callbacks that training needs (annealing schedules)."""
        return []

    def validate_data(self, arrays: dict) -> None:
        """Check a split's arrays on the host before ``fit``; raise ValueError naming the
        problem (NaN where the model has no notion of a missing value, wrong ranges)."""
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                bad = int(np.sum(~np.isfinite(value)))
                raise ValueError(
                    f"the data's {key!r} array holds {bad} NaN/Inf value(s); "
                    f"{type(self).__name__} cannot train on them: remove or impute them")

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, x, y, arrays: dict, settings: EvalSettings) -> dict:
        """What the model reports beyond Keras' metrics on the evaluation examples ``x``
        (``arrays``: the same examples' arrays). JSON-able values."""
        return {}

    # ------------------------------------------------------------------ pictures
    def tensorboard_images(self, x, settings: EvalSettings) -> dict:
        """Images for TensorBoard at every epoch end: ``{name: [n, H, W, C] in [0, 1]}``,
        drawn from a few fixed evaluation examples ``x``."""
        return {}

    def pictures(self, x, arrays: dict, out_dir: str, settings: EvalSettings) -> list:
        """PNG files a person would look at, drawn from a few evaluation examples ``x``
        (a seeded random choice); returns their paths."""
        return []


class ImageInputs:
    """The contract's data side for a model fed one split's ``image`` array [n, H, W, C]
    (put it before ``ZooModel`` in the bases: ``class M(ImageInputs, ZooModel, keras.Model)``)."""

    @classmethod
    def data_kwargs(cls, arrays: dict) -> dict:
        return {"input_shape": tuple(int(s) for s in arrays["image"].shape[1:])}

    @classmethod
    def fit_inputs(cls, arrays: dict):
        return arrays["image"], None
