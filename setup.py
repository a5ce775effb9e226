"""Mask R-CNN for nucleus segmentation on TensorFlow 2.21 / Keras 3, with the FCN-8s baseline."""
from setuptools import find_packages, setup

with open("requirements.txt") as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="nucleus-mrcnn",
    version="0.1.0",
    description="Mask R-CNN (matterport-compatible API) and FCN-8s for nucleus instance "
                "segmentation, Kaggle DSB 2018 metric and submission format",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["mrcnn", "mrcnn.*", "nucleus", "nucleus.*"]),
    package_data={"nucleus": ["data/*.txt", "sample/README.md", "sample/*/*/images/*.png",
                              "sample/*/*/masks/*.png"]},
    data_files=[("share/nucleus-mrcnn/weights", ["weights/mask_rcnn_nucleus.h5"])],
    install_requires=requirements,
    extras_require={"test": ["pytest>=8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                             # the backends-marked tests run again under KERAS_BACKEND=jax
                             "jax[cpu]>=0.10"],
                    # Keras's JAX backend beside TensorFlow; GPUs: pip install "jax[cuda12]".
                    # Without TensorFlow: requirements-jax.txt, then pip install --no-deps .
                    "jax": ["jax[cpu]>=0.10"],
                    # tools/mutation.py; mutmut 3 reads its [mutmut] section of setup.cfg
                    "mutation": ["mutmut>=3.8,<4"]},
    entry_points={"console_scripts": ["nucleus=nucleus.cli:main"]},
)
