"""Course-report toolkit for deep learning on Fashion-MNIST.

Rooms by concern, imports running one way (``cli`` > ``course``/``grading`` > ``sections`` > ``reporting`` >
``engine`` > ``models`` > ``data`` > the top-level modules): ``data`` (Fashion-MNIST, image folders, augmentation),
``models`` (networks, architectures as data), ``engine`` (the training loop, metrics, validation, the grid engine),
``sections`` (one module per report section, and their registry), ``reporting`` (the metrics file, fingerprints,
observations, figures, export), ``course`` (a student's assignment, folder and hand-in), ``grading`` (checking a
class's hand-ins), ``cli`` (the ``fashion-report`` command). Top level: ``paths``, ``cache``, ``cache_trust``,
``escape``, ``textfiles``, ``atomic``. Each room's ``__init__`` says what lives there and what it may import.
"""

import os
import sys

# OpenMP threads that busy-wait for each other make torch on a shared 2-core CPU many times slower when
# anything else runs (another report, a browser); passive waiting costs next to nothing on an idle one.
# It only takes effect when set before torch is first imported, which importing helpers first ensures.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# jsonschema (under nbformat) imports rfc3987_syntax where it is installed (jupyterlab's jupyter-events pulls it in),
# and that compiles some forty Lark grammars at import: 2 s in every process that reads a notebook (each command,
# each report's kernel), for the "iri" format, which no notebook schema uses. Marked absent, jsonschema skips it.
sys.modules.setdefault("rfc3987_syntax", None)

__version__ = "0.1.0"
