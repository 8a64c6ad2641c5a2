"""Callbacks that schedule a non-trainable variable (KL weight, temperature) during `fit`.

The value is a function of the optimizer's step counter, read at the start of each batch, so
a run resumed from a checkpoint (which restores the optimizer) continues the schedule exactly.
"""

from __future__ import annotations

import math

import keras

from zoo.layers.common import check_positive, check_positive_int, register


class _VariableSchedule(keras.callbacks.Callback):
    """Sets every model variable named ``variable_name`` to ``value(step)`` before each batch.

    Subclasses set ``variable_name``, ``config_keys`` (their ``__init__`` arguments) and define
    ``value(step) -> float``.
    """

    variable_name = ""

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in self.config_keys}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _targets(self):
        return [v for v in self.model.non_trainable_variables if v.name == self.variable_name]

    def _apply(self):
        if not self._variables:
            self._variables = self._targets()
        if not self._variables:
            if self.model.built:
                raise ValueError(
                    f"{type(self).__name__} found no variable named {self.variable_name!r} in "
                    f"model {self.model.name!r}; is the layer that owns it part of the model?"
                )
            return  # A subclassed model builds on its first batch; set the value after it.
        value = self.value(int(self.model.optimizer.iterations.numpy()))
        for variable in self._variables:
            variable.assign(value)

    def on_train_begin(self, logs=None):
        self._variables = []

    def on_train_batch_begin(self, batch, logs=None):
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        if not self._variables:  # the batch that built a subclassed model
            self._apply()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._variables:
            logs[self.variable_name] = float(self._variables[0].numpy())


@register
class TemperatureAnnealing(_VariableSchedule):
    r"""Jang et al.'s schedule $\tau = \max(\tau_{min}, \tau_0 e^{-r t})$, t updated every N steps.

    Args:
        rate: float. Decay rate r per step.
        minimum: float. Floor tau_min (0.5 in Jang et al. 2017).
        initial: float. Temperature tau_0 at step 0.
        every: int. The step t used is the optimizer step rounded down to a multiple of this.
    """

    variable_name = "temperature"
    config_keys = ("rate", "minimum", "initial", "every")

    def __init__(self, rate: float = 3e-5, minimum: float = 0.5, initial: float = 1.0,
                 every: int = 500):
        super().__init__()
        check_positive("rate", rate, allow_zero=True)
        check_positive("minimum", minimum)
        check_positive("initial", initial)
        check_positive_int("every", every)
        self.rate, self.minimum, self.initial, self.every = rate, minimum, initial, every

    def value(self, step: int) -> float:
        t = (step // self.every) * self.every
        return max(self.minimum, self.initial * math.exp(-self.rate * t))


@register
class KLAnnealing(_VariableSchedule):
    """Linear KL warm-up: the weight goes from ``start`` to ``end`` over ``steps`` steps.

    Args:
        start: float. Weight at step 0 (Krishnan et al. 2017 start near 0.2).
        end: float. Weight from step ``steps`` on.
        steps: int. Length of the warm-up in optimizer steps.
    """

    variable_name = "kl_weight"
    config_keys = ("start", "end", "steps")

    def __init__(self, start: float = 0.0, end: float = 1.0, steps: int = 5000):
        super().__init__()
        check_positive("start", start, allow_zero=True)
        check_positive("end", end, allow_zero=True)
        check_positive_int("steps", steps)
        self.start, self.end, self.steps = start, end, steps

    def value(self, step: int) -> float:
        frac = min(1.0, step / self.steps)
        return self.start + frac * (self.end - self.start)
