"""Export adapters of the Boltzmann machines (RBM, Gaussian-Bernoulli RBM, DBM; the Hopfield
network's ``recall_step``, ``unit_update`` and ``energy`` at the end).

Signatures, built-in TFLite ops only, on visible vectors of V = prod(image shape) values:

- ``gibbs_step``: one block Gibbs sweep with its noise as inputs (uniform(0, 1) for binary
  units, standard normal for a Gaussian visible layer). RBM: ``visible, hidden_noise,
  visible_noise -> visible, hidden, visible_probs, hidden_probs``; DBM: ``visible, hidden2,
  hidden1_noise, visible_noise, hidden2_noise -> visible, hidden1, hidden2, visible_probs``
  (the state (v, h2) is fed back; h1 is redrawn from it). An app samples by calling it in a
  loop with fresh noise.
- ``denoise(x) -> probs``: the mean-field reconstruction E[v | E[h | x]] (DBM: after mean
  field on both hidden layers); the Gaussian RBM gives the mean.
- ``inpaint(x, observed) -> probs``: ``inpaint_iterations`` mean-field reconstructions with
  the observed units (``observed`` = 1) clamped to ``x``.

Parity examples put each uniform noise value away from its unit's probability, so float32
and dynamic-range files are compared on probabilities rather than on coin flips.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.export.adapters import ExportSpec, Signature, model_config, register_adapter, spec

INPAINT_ITERATIONS = 10


def _away_from(p, x):
    """Uniform noise that gives the draws x with a margin: p/2 for 1, (1 + p)/2 for 0."""
    return np.where(x > 0.5, 0.5 * p, 0.5 * (1.0 + p)).astype("float32")


@register_adapter("boltzmann")
class BoltzmannAdapter:
    """``gibbs_step``, ``denoise`` and ``inpaint`` of an RBM, Gaussian-Bernoulli RBM or DBM."""

    def __init__(self, model):
        self.model = model
        self.dbm = hasattr(model, "hidden_dims")
        self.gaussian = hasattr(model, "log_variance")

    def _rbm_step(self, b):
        m = self.model
        v_dim, h_dim = m.visible_dim, m.hidden_dim

        def gibbs_step(visible, hidden_noise, visible_noise):
            step = m.gibbs_step(visible, hidden_noise, visible_noise)
            return {"visible": step.visible, "hidden": step.hidden,
                    "visible_probs": step.visible_probs, "hidden_probs": step.hidden_probs}

        def example(rng):
            if self.gaussian:
                v = rng.standard_normal((b, v_dim)).astype("float32")
            else:
                v = (rng.uniform(size=(b, v_dim)) < 0.3).astype("float32")
            hp = np.asarray(m.hidden_probs(v))
            h = (rng.uniform(size=hp.shape) < hp).astype("float32")
            ex = {"visible": v, "hidden_noise": _away_from(hp, h)}
            if self.gaussian:
                ex["visible_noise"] = rng.standard_normal((b, v_dim)).astype("float32")
            else:
                vp = np.asarray(m.gibbs_step(v, ex["hidden_noise"],
                                             np.zeros((b, v_dim), "float32")).visible_probs)
                drawn = (rng.uniform(size=vp.shape) < vp).astype("float32")
                ex["visible_noise"] = _away_from(vp, drawn)
            return ex

        inputs = {"visible": spec((b, v_dim), "visible"),
                  "hidden_noise": spec((b, h_dim), "hidden_noise"),
                  "visible_noise": spec((b, v_dim), "visible_noise")}
        return Signature(gibbs_step, inputs, example,
                         "v, uniform hidden noise, visible noise -> one block Gibbs sweep")

    def _dbm_step(self, b):
        m = self.model
        v_dim, (h1_dim, h2_dim) = m.visible_dim, m.hidden_dims
        from zoo.layers.gibbs import DBMState, dbm_hidden1_probs

        def gibbs_step(visible, hidden2, hidden1_noise, visible_noise, hidden2_noise):
            state = DBMState(visible, tf.zeros([b, h1_dim], visible.dtype), hidden2)
            new = m.gibbs_step(state, hidden1_noise, visible_noise, hidden2_noise)
            p = m.params()
            probs = tf.sigmoid(tf.matmul(new.hidden1, p.weights1, transpose_b=True)
                               + p.visible_bias)
            return {"visible": new.visible, "hidden1": new.hidden1, "hidden2": new.hidden2,
                    "visible_probs": probs}

        def example(rng):
            v = (rng.uniform(size=(b, v_dim)) < 0.3).astype("float32")
            h2 = (rng.uniform(size=(b, h2_dim)) < 0.5).astype("float32")
            p = m.params()
            p1 = np.asarray(dbm_hidden1_probs(v, h2, p))
            h1 = (rng.uniform(size=p1.shape) < p1).astype("float32")
            pv = np.asarray(tf.sigmoid(h1 @ np.asarray(p.weights1).T + p.visible_bias))
            p2 = np.asarray(tf.sigmoid(h1 @ np.asarray(p.weights2) + p.hidden2_bias))
            dv = (rng.uniform(size=pv.shape) < pv).astype("float32")
            d2 = (rng.uniform(size=p2.shape) < p2).astype("float32")
            return {"visible": v, "hidden2": h2, "hidden1_noise": _away_from(p1, h1),
                    "visible_noise": _away_from(pv, dv), "hidden2_noise": _away_from(p2, d2)}

        inputs = {"visible": spec((b, v_dim), "visible"), "hidden2": spec((b, h2_dim), "hidden2"),
                  "hidden1_noise": spec((b, h1_dim), "hidden1_noise"),
                  "visible_noise": spec((b, v_dim), "visible_noise"),
                  "hidden2_noise": spec((b, h2_dim), "hidden2_noise")}
        return Signature(gibbs_step, inputs, example,
                         "v, h2, uniform noise -> one sweep h1 | v, h2 then v, h2 | h1")

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        m, b = self.model, batch_size
        v_dim = m.visible_dim

        def data(rng):
            if self.gaussian:
                return rng.standard_normal((b, v_dim)).astype("float32")
            return (rng.uniform(size=(b, v_dim)) < 0.3).astype("float32")

        def denoise(x):
            return {"probs": m.reconstruct(x)}

        def inpaint(x, observed):
            return {"probs": m.reconstruct(x, observed=observed, iterations=INPAINT_ITERATIONS)}

        def inpaint_example(rng):
            observed = np.zeros((b, v_dim), "float32")
            observed[:, : v_dim // 2] = 1.0
            return {"x": data(rng), "observed": observed}

        x = {"x": spec((b, v_dim), "x")}
        signatures = {
            "gibbs_step": self._dbm_step(b) if self.dbm else self._rbm_step(b),
            "denoise": Signature(denoise, x, lambda rng: {"x": data(rng)},
                                 "x -> mean-field reconstruction (probabilities or means)"),
            "inpaint": Signature(inpaint, {**x, "observed": spec((b, v_dim), "observed")},
                                 inpaint_example,
                                 f"x, observed flags -> {INPAINT_ITERATIONS} mean-field "
                                 f"reconstructions with observed units clamped"),
        }
        metadata = {"model": type(m).__name__, "config": model_config(m),
                    "visible_dim": v_dim, "image_shape": m.image_shape,
                    "visible_noise": "standard normal" if self.gaussian else "uniform(0, 1)",
                    "inpaint_iterations": INPAINT_ITERATIONS}
        return ExportSpec(signatures, metadata)


@register_adapter("hopfield")
class HopfieldAdapter:
    """Associative recall of a Hopfield network on states s in {-1, 1}^d, built-in ops only:

    - ``recall_step(state) -> state, energy``: one synchronous update s <- sign(W s) (ties
      keep s_i) and the energy of the new state; an app recalls a memory by feeding the state
      back until it stops changing.
    - ``unit_update(state, position) -> state, energy``: the asynchronous building block, unit
      ``position`` (one-hot [b, d]) set to sign(W_i s); sweeping the units in a random order
      is the model's ``update="asynchronous"`` recall, and never raises the energy.
    - ``energy(state) -> energy``: E(s) = -s^T W s / 2.
    """

    def __init__(self, model):
        self.model = model

    def export_spec(self, batch_size: int = 1) -> ExportSpec:
        from zoo.layers.boltzmann_energy import hopfield_energy
        from zoo.layers.gibbs import hopfield_update

        m, b, d = self.model, batch_size, self.model.visible_dim

        def coupling():
            return tf.convert_to_tensor(m.coupling)

        def recall_step(state):
            new = hopfield_update(state, coupling())
            return {"state": new, "energy": hopfield_energy(new, coupling())}

        def unit_update(state, position):
            field = tf.reduce_sum(tf.matmul(state, coupling()) * position, -1, keepdims=True)
            old = tf.reduce_sum(state * position, -1, keepdims=True)
            new = tf.where(field > 0, tf.ones_like(old), tf.where(field < 0, -tf.ones_like(old),
                                                                  old))
            state = state + position * (new - old)
            return {"state": state, "energy": hopfield_energy(state, coupling())}

        def energy(state):
            return {"energy": hopfield_energy(state, coupling())}

        def states(rng):
            return np.where(rng.uniform(size=(b, d)) < 0.5, 1.0, -1.0).astype("float32")

        def unit_example(rng):
            return {"state": states(rng),
                    "position": np.eye(d, dtype="float32")[rng.integers(0, d, size=b)]}

        state = {"state": spec((b, d), "state")}
        signatures = {
            "recall_step": Signature(recall_step, state, lambda rng: {"state": states(rng)},
                                     "state in {-1, 1} -> one synchronous update, its energy"),
            "unit_update": Signature(unit_update, {**state, "position": spec((b, d), "position")},
                                     unit_example,
                                     "state, one-hot position -> that unit updated, energy"),
            "energy": Signature(energy, state, lambda rng: {"state": states(rng)},
                                "state -> E(s) = -s^T W s / 2"),
        }
        metadata = {"model": type(m).__name__, "config": model_config(m), "visible_dim": d,
                    "image_shape": m.image_shape, "states": "{-1, 1}",
                    "max_iterations": m.max_iterations, "update": m.update}
        return ExportSpec(signatures, metadata)
