"""Input and output formats: what the application reads and writes, and nothing else.

Images (:mod:`~nucleus.formats.image_io`, and :mod:`~nucleus.formats.lazy_io` for those larger
than memory), Kaggle's run-length encoding and submission files (:mod:`~nucleus.formats.rle`,
:mod:`~nucleus.formats.submission`), the label-image dataset layout
(:mod:`~nucleus.formats.export`), the nuclei table and the viewers' outlines
(:mod:`~nucleus.formats.nuclei_table`, :mod:`~nucleus.formats.viewer_formats`), the output folder
of ``nucleus segment`` (:mod:`~nucleus.formats.segment_outputs`) and atomic writes
(:mod:`~nucleus.formats.io_utils`). They sit below inference, training and the command line,
which use them and which they never import, so a file can be read or written without loading
a model (a submission is scored in :mod:`nucleus.scoring.submission_score`). Importing this
package imports no module, and no TensorFlow.
"""
