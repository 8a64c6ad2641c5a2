import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global seed (Python, NumPy, TensorFlow/Keras)."""
    keras.utils.set_random_seed(1234)
    yield


# The longest tests (by `pytest --durations`), started first so that `-n 2` does not end with
# one worker running a long test while the other idles (longest-first scheduling). The order
# of the rest is unchanged; every worker computes the same order, as xdist requires.
SLOW_FIRST = (
    "tests/test_readme.py::test_readme_python_blocks_run",
    "tests/test_lstm_kalman_filter.py::test_zoo_contract",
    "tests/test_training.py::test_a_real_sigint_then_resume_equals_the_uninterrupted_run",
    "tests/test_package.py::test_docstring_examples_run[zoo.lstm_kalman_filter]",
    "tests/test_dkf_filtering.py::test_dkf_learned_from_observations_filters_within_10_percent",
    "tests/test_training.py::test_mirrored_strategy_on_two_logical_cpus_matches_single_device",
    "tests/test_training.py::test_every_model_trains_evaluates_and_plots_from_the_cli[dmm]",
    "tests/test_training.py::test_filter_epochs_train_the_filter_alone_and_resume_reruns",
    "tests/test_bench_dssm.py::test_quick_benchmark_gives_numeric_tables",
    "tests/test_training.py::test_two_workers_over_localhost_agree",
    "tests/test_training.py::test_every_model_trains_evaluates_and_plots_from_the_cli[dkf]",
    "tests/test_export.py::test_kalman_stream_reproduces_float64_filter",
    "tests/test_dssm_objectives.py::test_fivo_fits_saves_reloads_and_is_reachable_from_the",
    "tests/test_particle_export.py::test_zoo_export_reaches_a_dkf_particle_filter_with_its",
    "tests/test_package.py::test_docstring_examples_run[zoo.deep_state_space]",
    "tests/test_training.py::test_every_model_trains_evaluates_and_plots_from_the_cli[particle",
    "tests/test_training.py::test_a_kill_during_any_file_write_keeps_the_last_checkpoint",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        for i, prefix in enumerate(SLOW_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(SLOW_FIRST)

    items[:] = sorted(items, key=rank)  # stable: the rest keep their order
