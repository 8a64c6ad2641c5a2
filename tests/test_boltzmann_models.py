"""The Boltzmann machine models: contract, training, evaluation against exact numbers, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_boltzmann_math import exact_samples
from tests.test_case import run_export_test, run_model_test
from zoo import datasets
from zoo.boltzmann import DBM, RBM, GaussianBernoulliRBM, HopfieldNetwork
from zoo.contract import EvalSettings


@pytest.fixture(scope="module")
def digits():
    """A seeded random 256-example subset of static-binarized digits (8 x 8)."""
    arrays = datasets.load_arrays("digits", binarize="static")
    pick = np.random.default_rng(0).choice(len(arrays["image"]), 256, replace=False)
    return {"image": arrays["image"][pick]}


def test_public_names():
    import zoo

    for name in ("RBM", "GaussianBernoulliRBM", "DBM", "HopfieldNetwork"):
        assert getattr(zoo, name).__name__ == name
    from zoo.registry import MODELS

    assert {"rbm", "gbrbm", "dbm", "hopfield"} <= set(MODELS)


def test_rbm_contract_and_ais_log_likelihood_against_exact(digits, tmp_path):
    def make():
        return RBM(**RBM.data_kwargs(digits), hidden_dim=12, training="pcd", cd_steps=2,
                   num_chains=32, ais_betas=1000, seed=0)

    bad = [(lambda m: m.free_energy(np.zeros((2, 5))), ValueError, "visible_dim=64"),
           (lambda m: RBM(64, training="gibbs"), ValueError, "training"),
           (lambda m: m.validate_data({"image": digits["image"] * 3}), ValueError, r"\[0, 1\]")]
    model, report = run_model_test(make, digits, deterministic=lambda m, x: m.free_energy(x),
                                   tmp_path=tmp_path, bad_inputs=bad, epochs=3,
                                   eval_examples=64)
    # AIS's log-likelihood against the exact one (2^12 hidden states enumerated)
    x = digits["image"][:64]
    exact = float(np.mean(model.exact_log_likelihood(x)))
    ais = model.log_partition(num_chains=100, num_betas=1000, seed=0)
    assert abs(report["ais_log_z"] - model.exact_log_partition()) < 4 * report["ais_log_z_se"]
    assert abs(report["ais_log_likelihood"] - exact) < 4 * report["ais_log_z_se"] + 1e-9
    assert float(ais.log_z_std_err) < 0.05
    # reverse AIS from the persistent chains: the sandwich closes on the exact log Z
    assert abs(report["ais_reverse_log_z"] - model.exact_log_partition()) < max(
        4 * report["ais_reverse_log_z_se"], 0.05)
    assert not report["ais_sandwich_open"]
    np.testing.assert_allclose(report["pseudo_log_likelihood"],
                               np.mean(model.pseudo_log_likelihood(x)), rtol=1e-5)
    assert report["reconstruction_error"] > 0


def test_rbm_learns_the_data(digits):
    """CD-1 raises the exact test log-likelihood well above the untrained model's."""
    model = RBM(64, hidden_dim=12, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = float(np.mean(model.exact_log_likelihood(digits["image"])))
    model.fit(digits["image"], epochs=10, batch_size=16, verbose=0)
    after = float(np.mean(model.exact_log_likelihood(digits["image"])))
    assert before < -44 and after > before + 10, (before, after)


@pytest.mark.parametrize("mean,sd", [([2.0], [0.5]), ([1.0, -1.0], [0.5, 2.0])])
def test_gaussian_rbm_recovers_the_data_variance(mean, sd):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, len(mean))) * sd + mean).astype("float32")
    model = GaussianBernoulliRBM(len(mean), hidden_dim=4, training="pcd", num_chains=100,
                                 seed=0)
    steps = 20 * 2000 // 100
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(0.02, steps)))  # decay averages PCD's noise
    _, cov0 = model.marginal_moments()
    model.fit(x, epochs=20, batch_size=100, verbose=0)
    model_mean, cov = model.marginal_moments()
    # the sample variance itself is uncertain by sqrt(2 / n) = 3%
    np.testing.assert_allclose(np.diag(cov), x.var(0), rtol=0.1)
    np.testing.assert_allclose(model_mean, x.mean(0), atol=0.25 * np.max(sd))
    assert np.all(np.abs(np.diag(cov0) / x.var(0) - 1) > 0.5)  # the start was far off


def test_gaussian_rbm_ais_log_likelihood_against_exact():
    """After training on 2-D Gaussian data, the model's AIS log Z (from N(data mean,
    sigma^2)) equals log Z by enumerating its 2^12 hidden states within the reported error,
    and ``evaluation`` reports the AIS test log-density beside the exact one."""
    from zoo.contract import EvalSettings

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(1000, 2)) * [0.5, 2.0] + [1.0, -1.0]).astype("float32")
    model = GaussianBernoulliRBM(2, hidden_dim=12, num_chains=50, ais_betas=1000, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    model.fit(x, epochs=3, batch_size=100, verbose=0)
    exact = model.exact_log_partition()
    ais = model.log_partition(num_chains=200, num_betas=1000, seed=1)
    error = float(ais.log_z_std_err)
    assert 0 < error < 0.05 and abs(float(ais.log_z) - exact) < 3 * error, (
        float(ais.log_z), exact, error)
    model.exact_hidden_limit = 0  # as for a large hidden layer
    report = model.evaluation(x[:200], None, {}, EvalSettings(num_samples=200, seed=1,
                                                              batch_size=100))
    expected = float(np.mean(model.exact_log_likelihood(x[:200])))
    assert abs(report["ais_log_likelihood"] - expected) < 3 * report["ais_log_z_se"] + 1e-6


@pytest.mark.slow
def test_gaussian_rbm_contract(tmp_path):
    arrays = datasets.load_arrays("digits", binarize=None)
    arrays = {"image": arrays["image"][np.random.default_rng(1).choice(
        len(arrays["image"]), 128, replace=False)]}

    def make():
        return GaussianBernoulliRBM(**GaussianBernoulliRBM.data_kwargs(arrays), hidden_dim=8,
                                    initial_log_variance=-2.0, num_chains=16, seed=0)

    model, report = run_model_test(make, arrays, deterministic=lambda m, x: m.free_energy(x),
                                   tmp_path=tmp_path, learning_rate=3e-3)
    assert np.isfinite(report["exact_log_likelihood"])


def test_dbm_bound_below_exact_log_likelihood_and_contract(digits, tmp_path):
    def make():
        return DBM(**DBM.data_kwargs(digits), hidden_dims=(8, 4), num_chains=32,
                   mean_field_steps=5, gibbs_steps=2, ais_betas=500, seed=0)

    model, report = run_model_test(make, digits,
                                   deterministic=lambda m, x: m.mean_field(x).hidden1,
                                   tmp_path=tmp_path, eval_examples=64)
    x = digits["image"][:64]
    exact = model.exact_log_likelihood(x)
    bound = model.lower_bound(x)
    assert np.all(bound <= exact + 1e-9)
    assert np.mean(exact - bound) < 1.0  # mean field is close on a small model
    log_z = model.exact_log_partition()
    assert abs(report["ais_log_z"] - log_z) < 4 * report["ais_log_z_se"]
    np.testing.assert_allclose(report["ais_lower_bound"], np.mean(bound)
                               + log_z - report["ais_log_z"], rtol=1e-6)
    assert abs(report["ais_reverse_log_z"] - log_z) < max(4 * report["ais_reverse_log_z_se"],
                                                          0.05)
    assert not report["ais_sandwich_open"]


def test_dbm_pretraining_and_centering_keep_their_promises(digits):
    x = digits["image"]
    model = DBM(64, hidden_dims=(8, 4), num_chains=16, pretrain_steps=8, centered=True, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    start = model.params()
    model.fit(x[:128], epochs=1, batch_size=16, verbose=0)  # 8 bottom-RBM updates
    moved = [not np.allclose(a, b) for a, b in zip(start, model.params())]
    assert moved == [True, False, True, True, False]  # only W1, b, c1
    assert np.allclose(model.hidden1_offset.numpy(), 0.0)  # no centering while pretraining
    model.fit(x, epochs=2, batch_size=16, verbose=0)  # top RBM, then joint training
    assert int(model.updates.numpy()) == 40
    assert np.all(model.hidden1_offset.numpy() > 0)  # offsets follow the mean field
    # moving the offsets leaves the distribution (the standard parameters) unchanged
    before = model.params()
    model.move_offsets(tf.constant(x[:16].reshape(16, -1)), tf.fill([16, 8], 0.9),
                       tf.fill([16, 4], 0.1))
    for a, b in zip(before, model.params()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_hopfield_capacity_hebbian_and_storkey():
    """d = 200 units: Hebbian recalls 0.1 d random patterns from 10%-flipped cues and fails at
    0.25 d (beyond 0.138 d); Storkey's rule still recalls 0.25 d."""
    d = 200
    rng = np.random.default_rng(0)

    def error(rule, alpha, update="synchronous", iterations=20):
        patterns = np.sign(rng.normal(size=(int(alpha * d), d))).astype("float32")
        net = HopfieldNetwork(d, rule=rule, update=update, max_iterations=iterations)
        net.store(patterns)
        return float(np.mean(net.recall_error(tf.constant(patterns), tf.constant([1, 2]))))

    assert error("hebbian", 0.10) < 0.02
    assert error("hebbian", 0.25) > 0.15
    assert error("storkey", 0.25) < 0.02
    assert error("hebbian", 0.10, "asynchronous", iterations=3) < 0.02


def test_hopfield_asynchronous_updates_never_raise_the_energy_and_fit_stores(digits, tmp_path):
    rng = np.random.default_rng(1)
    net = HopfieldNetwork(64, update="asynchronous", max_iterations=1, seed=0)
    net.store(np.sign(rng.normal(size=(5, 64))))
    s = tf.constant(np.sign(rng.normal(size=(16, 64))), tf.float32)
    energies = [net.energy(s).numpy()]
    for k in range(4):
        s = tf.constant(net.recall(s, seed=k))
        energies.append(net.energy(s).numpy())
    assert np.all(np.diff(np.array(energies), axis=0) <= 1e-5)
    # fit stores the training images (Hebbian: W = X^T X / d, zero diagonal)
    model = HopfieldNetwork(**HopfieldNetwork.data_kwargs(digits), max_patterns=8, seed=0)
    model.compile(optimizer="sgd")
    model.fit(digits["image"][:8], epochs=1, batch_size=4, verbose=0)
    xi = np.where(digits["image"][:8].reshape(8, -1) > 0.5, 1.0, -1.0)
    expected = xi.T @ xi / 64
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(model.coupling.numpy(), expected, atol=1e-6)
    assert sorted(map(tuple, model.memory.numpy())) == sorted(map(tuple, xi))  # fit shuffles
    model.fit(digits["image"][8:12], epochs=1, batch_size=4, verbose=0)  # beyond max_patterns
    np.testing.assert_allclose(model.coupling.numpy(), expected, atol=1e-6)
    report = model.evaluation(digits["image"][8:40], None, {}, EvalSettings())
    assert report["stored_patterns"] == 8 and 0 <= report["stored_recall_error"] <= 1
    path = str(tmp_path / "hopfield.keras")
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).coupling.numpy(), expected,
                               atol=1e-6)


@pytest.mark.parametrize("kind", ["rbm", pytest.param("gbrbm", marks=pytest.mark.slow), "dbm"])
def test_export_gibbs_step_denoise_inpaint(kind, tmp_path):
    if kind == "rbm":
        model = RBM(16, hidden_dim=6, image_shape=[4, 4, 1], seed=0)
    elif kind == "gbrbm":
        model = GaussianBernoulliRBM(16, hidden_dim=6, seed=0)
    else:
        model = DBM(16, hidden_dims=(6, 4), seed=0)
    rng = np.random.default_rng(0)  # weights of a trained-looking size
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) if w.dtype.kind == "f"
                       and "offset" not in w_.path and "data" not in w_.path else w
                       for w, w_ in zip(model.get_weights(), model.weights)])
    reports = run_export_test(model, tmp_path)
    assert set(reports["float32"].parity) == {"gibbs_step", "denoise", "inpaint"}
    # the exported sweep is the model's own sweep given the same noise
    from zoo.export.adapters import adapter_for

    sig = adapter_for(model).export_spec(1).signatures["gibbs_step"]
    example = sig.example(rng)
    out = sig.fn(**{k: tf.constant(v) for k, v in example.items()})
    if kind != "dbm":
        step = model.gibbs_step(example["visible"], example["hidden_noise"],
                                example["visible_noise"])
        np.testing.assert_allclose(out["visible"], step.visible, rtol=1e-6)


def test_hopfield_export_recall_step_unit_update_energy(tmp_path):
    """The exported synchronous step, fed back, recalls what the model recalls; unit updates
    in a random order never raise the exported energy; TFLite parity and built-in ops."""
    from zoo.export.adapters import adapter_for

    rng = np.random.default_rng(4)
    patterns = np.sign(rng.normal(size=(3, 32))).astype("float32")
    model = HopfieldNetwork(32, max_iterations=10)
    model.store(patterns)
    reports = run_export_test(model, tmp_path)
    assert set(reports["float32"].parity) == {"recall_step", "unit_update", "energy"}
    sigs = adapter_for(model).export_spec(1).signatures
    cue = patterns[:1].copy()
    cue[:, :4] *= -1
    state = tf.constant(cue)
    for _ in range(10):
        state = sigs["recall_step"].fn(state=state)["state"]
    np.testing.assert_array_equal(state, model.recall(cue))
    np.testing.assert_array_equal(state, patterns[:1])
    state, energies = tf.constant(cue), [float(sigs["energy"].fn(state=cue)["energy"][0])]
    for i in rng.permutation(32):
        out = sigs["unit_update"].fn(state=state, position=np.eye(32, dtype="float32")[[i]])
        state = out["state"]
        energies.append(float(out["energy"][0]))
    assert np.all(np.diff(energies) <= 1e-6) and energies[-1] < energies[0]


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_weight_decay_adds_its_term_to_the_trained_weights_only(digits, phase):
    """One SGD update in each DBM phase (bottom RBM, top RBM, joint) and of the RBM: with
    ``weight_decay`` each weight matrix the phase trains moves by exactly -lr * decay * W more
    than without (same seed, so the same noise and initial weights); the rest as without."""
    x, lr, decay = digits["image"][:16], 0.05, 0.3

    def step(model):
        if isinstance(model, DBM):
            model.updates.assign(phase)  # pretrain_steps=1: 0 bottom, 1 top, 2 joint
        model.compile(optimizer=keras.optimizers.SGD(lr))
        before = [w.numpy() for w in model.trainable_weights]
        model.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0)
        return before, {w.path.split("/")[-1]: w.numpy() for w in model.trainable_weights}

    for make, trained in (
            (lambda wd: DBM(64, hidden_dims=(8, 4), num_chains=16, pretrain_steps=1,
                            weight_decay=wd, seed=0),
             [{"weights1"}, {"weights2"}, {"weights1", "weights2"}][phase]),
            (lambda wd: RBM(64, hidden_dim=8, training="pcd", num_chains=16,
                            weight_decay=wd, seed=0), {"weights"})):
        (before, plain), (_, decayed) = step(make(0.0)), step(make(decay))
        start = dict(zip(plain, before))
        for name in plain:
            expected = plain[name] - (lr * decay * start[name] if name in trained else 0.0)
            np.testing.assert_allclose(decayed[name], expected, rtol=1e-5, atol=1e-7)
            if name in trained:  # the term is not negligible
                assert np.abs(lr * decay * start[name]).max() > 1e-4
    with pytest.raises(ValueError, match="weight_decay"):
        DBM(64, hidden_dims=(8, 4), weight_decay=-1.0)


def _randomize(model, rng, scale, names=("weights", "weights1", "weights2", "visible_bias",
                                         "hidden_bias", "hidden1_bias", "hidden2_bias")):
    model.set_weights([rng.normal(0, scale, w.shape).astype(w.dtype)
                       if var.path.split("/")[-1] in names else w
                       for w, var in zip(model.get_weights(), model.weights)])


def test_log_partition_floor_is_certified_and_exact_over_all_states():
    """The floor is log Z itself when the states are all configurations, below it for any
    subset (duplicates counted once); the DBM's mean-field data floor is below it too."""
    from zoo.layers.boltzmann_energy import binary_states

    rng = np.random.default_rng(0)
    rbm = RBM(6, hidden_dim=3, training="pcd", num_chains=4, seed=0)
    _randomize(rbm, rng, 1.0)
    every = binary_states(6).numpy()
    log_z = rbm.exact_log_partition()
    assert rbm.log_partition_floor(states=every) == pytest.approx(log_z, abs=1e-9)
    part = rbm.log_partition_floor(states=np.concatenate([every[:40], every[:40]]))
    assert part < log_z - 0.05
    assert part == pytest.approx(rbm.log_partition_floor(states=every[:40]), abs=1e-12)
    assert rbm.log_partition_floor(every[:40]) >= part - 1e-12  # chains add a second floor

    dbm = DBM(5, hidden_dims=(3, 2), num_chains=4, seed=0)
    _randomize(dbm, rng, 1.0)
    v, h2 = binary_states(5).numpy(), binary_states(2).numpy()
    pairs = (np.repeat(v, len(h2), 0), np.tile(h2, (len(v), 1)))
    log_z = dbm.exact_log_partition()
    assert dbm.log_partition_floor(states=pairs) == pytest.approx(log_z, abs=1e-9)
    data_floor = dbm.log_partition_floor(v, states=(v[:1], h2[:1]))  # mean field over all v
    assert log_z - 1.0 < data_floor < log_z
    with pytest.raises(TypeError, match="no certified floor"):
        GaussianBernoulliRBM(4, hidden_dim=2).log_partition_floor(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="needs `x` or `states`"):
        RBM(6, hidden_dim=3, training="cd").log_partition_floor()
    with pytest.raises(ValueError, match="binary configurations"):
        rbm.log_partition_floor(states=every * 0.5)
    grey = np.full((3, 6), 0.5)  # grey examples are left out: only the chains' floor counts
    assert rbm.log_partition_floor(grey) == rbm.log_partition_floor(states=None)


def test_reverse_and_mixture_path_log_partitions_match_the_enumeration():
    """The models' reverse AIS, started from exact samples, recovers the exact log Z within
    its error (RBM over v; DBM over (v, h2)); by default it starts from the chains. Forward
    AIS from a mixture of examples (``base_examples``) does too."""
    from zoo.layers.boltzmann_energy import binary_states, dbm_free_energy

    rng = np.random.default_rng(3)
    rbm = RBM(8, hidden_dim=4, training="pcd", num_chains=4, ais_betas=500, seed=0)
    _randomize(rbm, rng, 2.0)
    every = binary_states(8).numpy()
    log_p = np.asarray(rbm.unnormalized_log_prob(every))
    draws = exact_samples(log_p, every, 200, seed=4)
    result = rbm.reverse_log_partition(draws, seed=1)
    log_z = rbm.exact_log_partition()
    assert 0 < float(result.log_z_std_err) < 0.05
    assert abs(float(result.log_z) - log_z) < 3 * float(result.log_z_std_err)
    assert result.log_weights.shape == (200,)
    mixture = rbm.log_partition(num_chains=200, base_examples=draws[:20].reshape(20, 2, 4))
    assert abs(float(mixture.log_z) - log_z) < 3 * float(mixture.log_z_std_err) < 0.15
    assert np.isfinite(float(rbm.reverse_log_partition(num_betas=10).log_z))  # the 4 chains

    dbm = DBM(6, hidden_dims=(4, 3), num_chains=4, ais_betas=500, seed=0)
    _randomize(dbm, rng, 2.0)
    pairs = binary_states(9, tf.float64).numpy()
    log_p = -dbm_free_energy(tf.constant(pairs[:, :6]), tf.constant(pairs[:, 6:]),
                             dbm.params64()).numpy()
    draws = exact_samples(log_p, pairs, 200, seed=5)
    result = dbm.reverse_log_partition((draws[:, :6], draws[:, 6:]), seed=1)
    assert abs(float(result.log_z) - dbm.exact_log_partition()) < 3 * float(
        result.log_z_std_err) < 0.15
    mixture = dbm.log_partition(num_chains=200, base_examples=draws[:20, :6])
    assert abs(float(mixture.log_z) - dbm.exact_log_partition()) < 3 * float(
        mixture.log_z_std_err) < 0.15
    assert np.isfinite(float(dbm.reverse_log_partition(num_betas=10, burn_in=5).log_z))
    with pytest.raises(ValueError, match="no persistent chains"):
        RBM(6, hidden_dim=3, training="cd").reverse_log_partition()


def test_rbm_energy_descent_reaches_modes_and_flags_starved_ais(digits):
    """The RBM's descent never raises E(v, h); from the data its modes put the floor near the
    exact log Z of a sharp random RBM, and a starved AIS run is flagged below it."""
    from zoo.layers.boltzmann_energy import RBMParams, rbm_energy

    rng = np.random.default_rng(2)
    x = digits["image"].reshape(len(digits["image"]), -1)
    model = RBM(64, hidden_dim=16, training="cd", ais_betas=3, seed=0)
    _randomize(model, rng, 4.0, names=("weights",))
    p = RBMParams(*(tf.cast(a, tf.float64) for a in model.params()))
    energies = [rbm_energy(*model.energy_descent(x, k), p).numpy() for k in (1, 2, 5, 30)]
    assert np.all(np.diff(np.stack(energies), axis=0) <= 1e-9)
    log_z = model.exact_log_partition()
    floor = model.log_partition_floor(x, descent_sweeps=30)
    assert log_z - 5.0 < floor <= log_z
    assert model.log_partition_floor(x) < floor - 50
    with pytest.warns(RuntimeWarning) as caught:
        report = model.evaluation(x, None, {}, EvalSettings(num_samples=2, seed=0))
    messages = " ".join(str(w.message) for w in caught)
    assert "below the certified floor" in messages and "has not converged" in messages
    assert report["ais_below_floor"] and report["log_z_floor"] == pytest.approx(floor)
    assert report["ais_sandwich_open"] and report["ais_reverse_log_z"] > log_z


def test_energy_descent_floor_flags_an_ais_run_that_lost_the_modes(digits):
    """On a sharp random DBM, energy descent never raises E, its modes put the floor within a
    few nats of the exact log Z, and a starved AIS run (2 chains, 3 temperatures) falls below
    the floor: the evaluation report says so while its reported error does not."""
    from zoo.layers.boltzmann_energy import dbm_energy

    rng = np.random.default_rng(1)
    x = digits["image"].reshape(len(digits["image"]), -1)
    model = DBM(64, hidden_dims=(16, 8), num_chains=8, ais_betas=3, seed=0)
    _randomize(model, rng, 4.0, names=("weights1", "weights2"))
    p = model.params64()
    energies = []
    for sweeps in (1, 2, 5, 30):
        s = model.energy_descent(x, sweeps)
        energies.append(dbm_energy(*s, p).numpy())
    assert np.all(np.diff(np.stack(energies), axis=0) <= 1e-9)
    log_z = model.exact_log_partition()
    floor = model.log_partition_floor(x, descent_sweeps=30)
    assert log_z - 5.0 < floor <= log_z
    assert model.log_partition_floor(x) < floor - 50  # the data alone: far looser
    with pytest.warns(RuntimeWarning) as caught:
        report = model.evaluation(x, None, {}, EvalSettings(num_samples=2, seed=0))
    messages = " ".join(str(w.message) for w in caught)
    assert "below the certified floor" in messages and "has not converged" in messages
    assert report["ais_sandwich_open"] and report["ais_reverse_log_z"] > log_z > report[
        "ais_log_z"]  # the starved runs err on their own sides
    assert report["log_z_floor"] == pytest.approx(floor, abs=1e-6)
    assert report["ais_log_z"] < floor - 20 and report["ais_below_floor"]
    good = model.log_partition(num_chains=100, num_betas=5000, seed=0)
    assert floor <= float(good.log_z) + 4 * float(good.log_z_std_err)
