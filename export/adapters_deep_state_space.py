"""Export adapter of the deep state-space models (DKF, DMM): ``"deep_state_space"``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.export.adapters import LatentModelAdapter, register_adapter
from zoo.export.protocol import ENCODE, FILTER_STEP, INIT_STATE, ExportSpec, Signature, spec


@register_adapter("deep_state_space")
class DeepStateSpaceAdapter(LatentModelAdapter):
    """``decode`` / ``sample`` / ``sample_random`` of the emission p(x_t | z_t), and for models
    with a causal network (the model's ``causal`` is true: a ``filter_inference`` network, the
    default of the learn-then-filter recipe, or a causal ``inference`` ``rnn``, ``st-l``,
    ``indep``) ``init_state`` + ``filter_step`` from the model's own ``initial_state`` and
    ``filter_step``, which run that causal network.

    Frame inputs: ``observation`` [b, *observation_shape] and ``observed`` [b] (1 = present,
    0 = missing). Outputs: the new state, ``estimate`` (posterior mean of z_t), ``uncertainty``
    (its standard deviations) and ``observation_mean`` (the emission of the mean).
    """

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        base = super().export_spec(batch_size)
        signatures = {k: v for k, v in base.signatures.items() if k != ENCODE}
        m, b = self.model, batch_size
        metadata = {**base.metadata, "latent_dim": m.latent_dim, "inference": m.inference,
                    "filter_inference": m.filter_inference or m.inference}
        if not m.causal:
            metadata["filter"] = (f"none: inference={m.inference!r} looks at future frames "
                                  f"and the model has no filter_inference network")
            return ExportSpec(signatures, metadata)
        state0 = m.initial_state(b)
        state = {k: spec(v.shape, k) for k, v in state0.items()}
        frame = {"observation": spec((b, *m.observation_shape), "observation"),
                 "observed": spec((b,), "observed")}

        def filter_step(observation, observed, **st):
            new_state, out = m.filter_step(st, observation, observed)
            return {**new_state, "estimate": out["filtered_mean"],
                    "uncertainty": out["filtered_scale"],
                    "observation_mean": tf.reshape(out["observation_mean"],
                                                   observation.shape)}

        def step_example(rng):
            ex = {k: rng.uniform(-0.5, 0.5, v.shape).astype("float32")
                  for k, v in state0.items()}
            ex["observation"] = self._data_example(rng, b)
            ex["observed"] = np.ones((b,), "float32")
            return ex

        signatures[INIT_STATE] = Signature(lambda: m.initial_state(b), {}, lambda rng: {},
                                           "the state before the first frame")
        signatures[FILTER_STEP] = Signature(
            filter_step, {**state, **frame}, step_example,
            "state + frame x_t (+ observed flag) -> new state, mean and standard deviations "
            "of q(z_t | x_1..x_t), emission mean")
        metadata.update(estimate="E_q[z_t | x_1..x_t]", uncertainty="std of q(z_t | x_1..x_t)")
        return ExportSpec(signatures, metadata, state=tuple(state))
