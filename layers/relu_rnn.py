"""A ReLU ``SimpleRNN`` with a hand-written gradient (the DMM's ``rnn_cell="rnn"``)."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.layers.common import loop_pieces, map_batch_pieces, register


def relu_rnn_sequence(inputs, mask, kernel, recurrent_kernel, bias, pieces: int | None = None,
                      reverse: bool = False):
    r"""The states $h_t$ of a masked ReLU RNN over time-major ``inputs`` [time, batch, in].

    $h_t = \mathrm{relu}(x_t W + h_{t-1} U + b)$ where ``mask`` [time, batch] (0/1) is 1 and
    $h_t = h_{t-1}$ where it is 0 (a masked step keeps the state, as Keras' RNN layers do),
    from $h_0 = 0$; with ``reverse`` the loop runs from the last step to the first ($h_{t+1}$
    in place of $h_{t-1}$). Returns [time, batch, units] in the order of ``inputs``.

    The input products $x_t W$ of every step are one matrix product before the loop, and the
    gradient is written by hand: the backward loop carries only $\partial h_{t-1}$ (one
    [batch, units] x [units, units] product a step), and the gradients of $W$, $U$ and $b$
    are single products over all steps after it, where automatic differentiation of the loop
    forms three products a step and sums them one step at a time. The result equals
    autodiff's to float rounding (tested against Keras' ``SimpleRNN``).

    The batch runs as ``pieces`` independent loops side by side (None:
    :func:`~zoo.layers.common.loop_pieces`, the threads of a CPU-only machine).
    """

    @tf.custom_gradient
    def run(xs, ms, w, u, b):
        dtype = xs.dtype
        h0 = tf.zeros([tf.shape(xs)[1], tf.shape(u)[0]], dtype)
        drive = tf.einsum("tbi,ih->tbh", xs, w) + b

        def step(h, elems):
            a_t, m_t = elems
            new = tf.nn.relu(a_t + tf.matmul(h, u))
            return tf.where(m_t[:, None] > 0, new, h)

        hs = tf.scan(step, (drive, ms), initializer=h0, reverse=reverse)

        def grad(dhs):
            m = ms[..., None]
            # Where the step ran (m = 1) h_t is relu's output, so relu'(.) = [h_t > 0].
            active = tf.cast(hs > 0, dtype) * m
            keep = 1.0 - m

            def back(carry, elems):
                g_out, active_t, keep_t = elems
                g = g_out + carry[0]
                dz = g * active_t
                return g * keep_t + tf.matmul(dz, u, transpose_b=True), dz

            _, dz = tf.scan(back, (dhs, active, keep), initializer=(h0, h0),
                            reverse=not reverse)
            h_prev = (tf.concat([hs[1:], h0[None]], 0) if reverse
                      else tf.concat([h0[None], hs[:-1]], 0))
            flat_dz = tf.reshape(dz, [-1, tf.shape(dz)[-1]])
            dw = tf.matmul(tf.reshape(xs, [-1, tf.shape(xs)[-1]]), flat_dz, transpose_a=True)
            du = tf.matmul(tf.reshape(h_prev, [-1, tf.shape(h_prev)[-1]]), flat_dz,
                           transpose_a=True)
            dx = tf.einsum("tbh,ih->tbi", dz, w)
            return dx, None, dw, du, tf.reduce_sum(dz, [0, 1])

        return hs, grad

    dtype = inputs.dtype
    weights = [tf.cast(w, dtype) for w in (kernel, recurrent_kernel, bias)]
    return map_batch_pieces(lambda xs, ms: run(xs, ms, *weights),
                            (inputs, tf.cast(mask, dtype)),
                            loop_pieces() if pieces is None else pieces, axis=1)


@register
class ReluRNN(keras.layers.SimpleRNN):
    """Keras' ``SimpleRNN`` with ``activation="relu"``, trained faster.

    The same layer (arguments, weights, outputs, masking; a drop-in that loads the same
    weights), whose call runs :func:`relu_rnn_sequence` when it can: ``return_sequences``,
    no initial state, no (recurrent) dropout while training, not stateful, not unrolled, a
    bias, masked steps repeating the last output (not ``zero_output_for_mask``, which
    ``Bidirectional`` sets). Anything else runs ``SimpleRNN``'s own loop.

    Example:

    >>> import numpy as np
    >>> rnn = ReluRNN(3, return_sequences=True)
    >>> rnn(np.ones((2, 4, 5), "float32")).shape
    TensorShape([2, 4, 3])
    """

    def __init__(self, units, **kwargs):
        kwargs.setdefault("activation", "relu")
        super().__init__(units, **kwargs)

    def _fast(self, initial_state, training) -> bool:
        cell = self.cell
        dropout = training and (cell.dropout or cell.recurrent_dropout)
        return (cell.activation is keras.activations.relu and cell.use_bias
                and self.return_sequences and not self.return_state and not self.stateful
                and not self.unroll and not self.zero_output_for_mask
                and initial_state is None and not dropout)

    def time_major_states(self, inputs, mask):
        """The states [time, batch, units] of time-major ``inputs`` [time, batch, in] and
        ``mask`` [time, batch], in the order of the inputs whatever ``go_backwards`` (the
        loop runs backward over them instead of reversing copies); what ``call`` returns
        transposed, and reversed in time for ``go_backwards``. None where ``call`` would run
        Keras' loop or the layer is not built yet (then call the layer)."""
        if not self.built or not self._fast(None, training=True):  # no dropout either way
            return None
        cell = self.cell
        return relu_rnn_sequence(tf.cast(inputs, self.compute_dtype),
                                 tf.cast(mask, self.compute_dtype), cell.kernel,
                                 cell.recurrent_kernel, cell.bias, reverse=self.go_backwards)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not self._fast(initial_state, training):
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)
        x = tf.transpose(tf.cast(sequences, self.compute_dtype), [1, 0, 2])
        m = (tf.ones(tf.shape(x)[:2], self.compute_dtype) if mask is None
             else tf.transpose(tf.cast(mask, self.compute_dtype)))
        if self.go_backwards:  # processed last step first; outputs in that order (Keras')
            x, m = tf.reverse(x, [0]), tf.reverse(m, [0])
        cell = self.cell
        hs = relu_rnn_sequence(x, m, cell.kernel, cell.recurrent_kernel, cell.bias)
        return tf.transpose(hs, [1, 0, 2])
