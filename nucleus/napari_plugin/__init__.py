"""napari plugin (npe2; manifest ``napari.yaml``, found through the ``napari.manifest`` entry
point of setup.py): a dock widget that segments an image layer into a Labels layer with the
per-nucleus table as its features, a reader for ``nucleus segment``'s ``*_labels.tif`` with
``nuclei.csv``, and a bundled sample image in File > Open Sample.

Nothing here imports napari or Qt at import time of :mod:`nucleus`: napari loads these modules
only when the user opens the widget, a file or the sample.
"""
