"""Where the toolkit's files are: the notebooks it ships and the folders it writes to.

Run from a checkout (the folder above ``helpers/`` holds ``pyproject.toml`` and ``notebooks/``), everything is
in the checkout: ``notebooks/``, ``reports/``, ``data/``. Installed with ``pip install .``, the notebooks and
assignment files come from the installed package (the build copies ``notebooks/`` to ``helpers/notebooks``) and
nothing is ever written into site-packages: reports go under the folder the command was started in, the data
into a user folder.

This module imports nothing of the package, so that ``config`` and ``data`` can both use it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Installed, the folder reports are written under. The first process sets it to its working folder; report kernels
# inherit it (they run inside the notebooks' folder, which is in site-packages, and must not write there).
ROOT_ENV = "FASHION_REPORT_ROOT"


def checkout_root(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The repository holding ``package_dir`` when running from a checkout, else None (an installed copy)."""
    root = package_dir.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def user_data_dir() -> Path:
    """Where an installed copy keeps the data it downloads: one folder per user, whatever the working folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fashion-report" / "data"


CHECKOUT = checkout_root()
if CHECKOUT is not None:
    PROJECT_ROOT = CHECKOUT
    NOTEBOOKS_DIR = CHECKOUT / "notebooks"
    DATA_DIR = CHECKOUT / "data"
else:
    PROJECT_ROOT = Path(os.environ.setdefault(ROOT_ENV, os.getcwd())).resolve()
    # papermill needs a real file, so an installed copy must be unpacked on disk (pip always does that)
    NOTEBOOKS_DIR = Path(str(resources.files(__package__).joinpath("notebooks")))
    DATA_DIR = user_data_dir()

# Each report section's notebook and title.
NOTEBOOKS = {
    "mlp": ("01_mlp_grid.ipynb", "MLP optimizer × regularizer grid"),
    "cnn": ("02_cnn_comparison.ipynb", "CNN pooling × normalization comparison"),
    "transfer": ("03_transfer_learning.ipynb", "Transfer learning"),
    "autoencoder": ("04_autoencoder.ipynb", "Denoising autoencoder"),
}


def notebook_path(section: str) -> Path:
    """The notebook of report section ``section`` (a key of :data:`NOTEBOOKS`)."""
    return NOTEBOOKS_DIR / NOTEBOOKS[section][0]
