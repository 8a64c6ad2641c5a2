"""Pyro's Deep Markov Model example (``examples/dmm.py`` of pyro-ppl), as a timing reference.

The architecture of Pyro's example: ``GatedTransition`` (gate and proposed mean from two
two-layer MLPs, loc = (1 - g) * Linear(z) + g * proposed with the Linear set to the identity,
scale = softplus(Linear(relu(proposed)))), ``Emitter`` (two relu layers, sigmoid output),
``Combiner`` (h = 1/2 (tanh(W z_{t-1} + b) + h_rnn)), a backward RNN over the reversed
sequences (here a GRU, as ours), learned z_0 and z_q_0, masked Bernoulli likelihood, KL
annealing through ``poutine.scale``, ``Trace_ELBO`` and Adam. The sizes are arguments so the
benchmark can give both frameworks the same ones.

Needs the ``bench`` extra: torch (CPU) and pyro-ppl.
"""

from __future__ import annotations

import numpy as np


def build(observation_dim: int = 88, latent_dim: int = 32, emission_units: int = 100,
          transition_units: int = 100, rnn_units: int = 128, learning_rate: float = 3e-4,
          seed: int = 0, num_threads: int | None = None):
    """A (model, guide, svi) triple of Pyro's DMM; ``svi.step(x, x_reversed, mask, lengths)``."""
    import pyro
    import pyro.distributions as dist
    import torch
    import torch.nn as nn
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import ClippedAdam

    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()

    class Emitter(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin_z_to_hidden = nn.Linear(latent_dim, emission_units)
            self.lin_hidden_to_hidden = nn.Linear(emission_units, emission_units)
            self.lin_hidden_to_input = nn.Linear(emission_units, observation_dim)

        def forward(self, z_t):
            h1 = torch.relu(self.lin_z_to_hidden(z_t))
            h2 = torch.relu(self.lin_hidden_to_hidden(h1))
            return torch.sigmoid(self.lin_hidden_to_input(h2))

    class GatedTransition(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin_gate_z_to_hidden = nn.Linear(latent_dim, transition_units)
            self.lin_gate_hidden_to_z = nn.Linear(transition_units, latent_dim)
            self.lin_proposed_mean_z_to_hidden = nn.Linear(latent_dim, transition_units)
            self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_units, latent_dim)
            self.lin_sig = nn.Linear(latent_dim, latent_dim)
            self.lin_z_to_loc = nn.Linear(latent_dim, latent_dim)
            self.lin_z_to_loc.weight.data = torch.eye(latent_dim)
            self.lin_z_to_loc.bias.data = torch.zeros(latent_dim)

        def forward(self, z_t_1):
            gate = torch.sigmoid(self.lin_gate_hidden_to_z(
                torch.relu(self.lin_gate_z_to_hidden(z_t_1))))
            proposed = self.lin_proposed_mean_hidden_to_z(
                torch.relu(self.lin_proposed_mean_z_to_hidden(z_t_1)))
            loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed
            scale = nn.functional.softplus(self.lin_sig(torch.relu(proposed)))
            return loc, scale

    class Combiner(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin_z_to_hidden = nn.Linear(latent_dim, rnn_units)
            self.lin_hidden_to_loc = nn.Linear(rnn_units, latent_dim)
            self.lin_hidden_to_scale = nn.Linear(rnn_units, latent_dim)

        def forward(self, z_t_1, h_rnn):
            h = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
            return (self.lin_hidden_to_loc(h),
                    nn.functional.softplus(self.lin_hidden_to_scale(h)))

    class DMM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emitter = Emitter()
            self.trans = GatedTransition()
            self.combiner = Combiner()
            self.rnn = nn.GRU(observation_dim, rnn_units, batch_first=True)
            self.z_0 = nn.Parameter(torch.zeros(latent_dim))
            self.z_q_0 = nn.Parameter(torch.zeros(latent_dim))
            self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_units))

        def model(self, x, x_reversed, mask, lengths, annealing_factor=1.0):
            pyro.module("dmm", self)
            z_prev = self.z_0.expand(x.size(0), latent_dim)
            with pyro.plate("z_minibatch", x.size(0)):
                for t in range(1, x.size(1) + 1):
                    loc, scale = self.trans(z_prev)
                    with poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample(f"z_{t}", dist.Normal(loc, scale)
                                          .mask(mask[:, t - 1:t]).to_event(1))
                    probs = self.emitter(z_t)
                    pyro.sample(f"obs_x_{t}", dist.Bernoulli(probs)
                                .mask(mask[:, t - 1:t]).to_event(1), obs=x[:, t - 1])
                    z_prev = z_t

        def guide(self, x, x_reversed, mask, lengths, annealing_factor=1.0):
            pyro.module("dmm", self)
            h_0 = self.h_0.expand(1, x.size(0), rnn_units).contiguous()
            packed = nn.utils.rnn.pack_padded_sequence(x_reversed, lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.rnn(packed, h_0)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=x.size(1))
            out = reverse_sequences(out, lengths)
            z_prev = self.z_q_0.expand(x.size(0), latent_dim)
            with pyro.plate("z_minibatch", x.size(0)):
                for t in range(1, x.size(1) + 1):
                    loc, scale = self.combiner(z_prev, out[:, t - 1])
                    with pyro.poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample(f"z_{t}", dist.Normal(loc, scale)
                                          .mask(mask[:, t - 1:t]).to_event(1))
                    z_prev = z_t

    def reverse_sequences(seqs, lengths):
        out = torch.zeros_like(seqs)
        for b, n in enumerate(lengths.tolist()):
            out[b, :n] = seqs[b, :n].flip(0)
        return out

    dmm = DMM()
    optimizer = ClippedAdam({"lr": learning_rate, "betas": (0.96, 0.999),
                             "clip_norm": 10.0, "lrd": 1.0})
    svi = SVI(dmm.model, dmm.guide, optimizer, loss=Trace_ELBO())
    return dmm, svi, reverse_sequences


def batch_tensors(observations: np.ndarray, mask: np.ndarray):
    """Torch tensors (x, x_reversed, mask, lengths) of a padded batch [B, T, D], [B, T]."""
    import torch

    lengths = mask.sum(1).astype(np.int64)
    x = torch.as_tensor(observations, dtype=torch.float32)
    rev = np.zeros_like(observations)
    for b, n in enumerate(lengths):
        rev[b, :n] = observations[b, :n][::-1]
    return (x, torch.as_tensor(rev, dtype=torch.float32),
            torch.as_tensor(mask, dtype=torch.float32), torch.as_tensor(lengths))


def versions() -> str:
    import pyro
    import torch

    return f"torch {torch.__version__}, pyro-ppl {pyro.__version__}"
