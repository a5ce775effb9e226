"""Mask R-CNN for nucleus segmentation on TensorFlow 2.21 / Keras 3, with the FCN-8s baseline."""
from setuptools import find_packages, setup

with open("requirements.txt") as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]
# The napari plugin (nucleus/napari_plugin/): napari with one Qt binding. The test extra carries
# it too, so that the README's one test command (and .ci/run) tests the plugin.
NAPARI = ["napari[pyqt6]>=0.5.6", "magicgui>=0.9"]

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
                              "sample/*/*/masks/*.png"],
                  "nucleus.napari_plugin": ["napari.yaml"]},
    data_files=[("share/nucleus-mrcnn/weights", ["weights/mask_rcnn_nucleus.h5"])],
    install_requires=requirements,
    extras_require={"test": ["pytest>=8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                             # the backends-marked tests run again under KERAS_BACKEND=jax
                             "jax[cpu]>=0.10", *NAPARI],
                    # pip install ".[napari]": the napari plugin (dock widget, reader, sample)
                    "napari": NAPARI,
                    # Keras's JAX backend beside TensorFlow; GPUs: pip install "jax[cuda12]".
                    # Without TensorFlow: requirements-jax.txt, then pip install --no-deps .
                    "jax": ["jax[cpu]>=0.10"],
                    # tools/mutation.py; mutmut 3 reads its [mutmut] section of setup.cfg
                    "mutation": ["mutmut>=3.8,<4"]},
    entry_points={"console_scripts": ["nucleus=nucleus.cli:main"],
                  # npe2 finds the plugin's manifest through this entry point
                  "napari.manifest": ["nucleus-mrcnn = nucleus.napari_plugin:napari.yaml"]},
)
