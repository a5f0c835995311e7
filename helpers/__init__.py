"""Course-report toolkit for deep learning on Fashion-MNIST.

Modules: ``data`` (finding, reading, splitting), ``augment`` (batch augmentation), ``models`` (builders,
initialisation, summaries), ``training`` (``fit``), ``metrics`` (evaluation as data), ``plots`` (figures),
``experiment`` (the grid engine), ``architecture`` (CNN specs),
``config`` (parameter validation and profiles), ``report`` (provenance,
metrics files, observations).
"""

import os

# OpenMP threads that busy-wait for each other make torch on a shared 2-core CPU many times slower when
# anything else runs (another report, a browser); passive waiting costs next to nothing on an idle one.
# It only takes effect when set before torch is first imported, which importing helpers first ensures.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
