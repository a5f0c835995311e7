"""Course-report toolkit for deep learning on Fashion-MNIST.

Modules: ``data`` (finding, reading, splitting), ``augment`` (batch augmentation), ``models`` (builders,
initialisation, summaries), ``training`` (``fit``), ``metrics`` (evaluation as data), ``plots`` (figures),
``grid`` (configuration grids), ``config`` (parameter validation and profiles), ``report`` (provenance,
metrics files, observations).
"""

__version__ = "0.1.0"
