"""Shared fixtures: a tiny Fashion-MNIST-like IDX data set written to a temporary folder.

Other test files can use the ``fake_data_dir`` fixture (session scope, a :class:`~pathlib.Path`)
or import the helpers directly::

    from tests.conftest import make_fake_fashion_mnist, write_idx
"""

from __future__ import annotations

import gzip as _gzip
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see helpers/__init__.py

import numpy as np  # noqa: E402
import pytest
import torch
from filelock import FileLock

# File stems of the four IDX files (the same names as helpers.data.fashion.FILES, spelled out here so the
# fixture does not depend on the code under test).
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
LAYOUTS = {"flat": ".", "torchvision": "FashionMNIST/raw"}
NUM_CLASSES = 10
IMAGE_SIZE = 28
N_TRAIN, N_TEST = 200, 100


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long-running test (deselect with -m 'not slow')")


# The modules that run whole reports, slowest first (measured with TEST_TIMELINE: 190 s down to 35 s of one
# process's time). They are collected first, so that the two test processes end on short tests: pytest-xdist's
# worksteal gives each process half of the list and a process that runs dry takes from the other's end.
WHOLE_REPORTS = ("test_resume", "test_notebook_transfer_ae", "test_dask_batch", "test_cli", "test_notebook_mlp",
                 "test_cache", "test_assignments", "test_notebook_cnn", "test_course_folder_run", "test_progress",
                 "test_hostile_verify", "test_packaging")


def pytest_collection_modifyitems(config, items):
    """Put :data:`WHOLE_REPORTS`' tests first, in that order; each module's tests stay together and in order (its
    module fixtures run once per process)."""
    rank = {name: i for i, name in enumerate(WHOLE_REPORTS)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))


def pytest_runtest_logfinish(nodeid, location):
    """With ``TEST_TIMELINE=FILE``, append when each test ended and on which worker: how the suite's time is spread
    over the processes (``bash run.sh test`` runs two) and what ends it."""
    if os.environ.get("TEST_TIMELINE"):
        with open(os.environ["TEST_TIMELINE"], "a", encoding="utf-8") as f:
            f.write(f"{time.time():.2f} {os.environ.get('PYTEST_XDIST_WORKER', 'main')} {nodeid}\n")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array: 0x0000, type 0x08, ndim, big-endian sizes, data."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files here hold unsigned bytes, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_idx(path: str | Path, array: np.ndarray, gzip: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file; ``gzip=True`` compresses it and appends ``.gz`` if missing.

    Returns the path written.
    """
    path = Path(path)
    if gzip and path.suffix != ".gz":
        path = path.with_name(path.name + ".gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(_gzip.compress(data, mtime=0) if gzip else data)
    return path


def fake_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images and their labels 0-9 (every class present when ``n >= 10``).

    Each class has its own bright 7x7 square (at one of ten positions) and brightness over a
    faint noisy background, so even a small model separates the classes after a few epochs.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, IMAGE_SIZE, IMAGE_SIZE)).astype(np.int64)
    for i, c in enumerate(labels):
        row, col = divmod(int(c), 4)  # a 3 x 4 grid of 7x7 cells, ten of them used
        top, left = 1 + 9 * row + rng.integers(-1, 2), 1 + 7 * col + rng.integers(-1, 1)
        top, left = int(np.clip(top, 0, IMAGE_SIZE - 7)), int(np.clip(left, 0, IMAGE_SIZE - 7))
        images[i, top:top + 7, left:left + 7] = 150 + 10 * int(c) + rng.integers(0, 10, size=(7, 7))
    return images.astype(np.uint8), labels


def make_fake_fashion_mnist(folder: str | Path, n_train: int = N_TRAIN, n_test: int = N_TEST,
                            layout: str = "flat", gz: bool = True, seed: int = 0) -> Path:
    """Write the four Fashion-MNIST IDX files of a fake data set under ``folder``; return ``folder``.

    ``layout="flat"`` puts the files in ``folder`` itself, ``"torchvision"`` in ``folder/FashionMNIST/raw``
    (where torchvision downloads them). ``gz`` picks ``.gz`` files or plain ones. Train and test
    sets are drawn with different seeds, so they differ.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: allowed {', '.join(LAYOUTS)}")
    folder = Path(folder)
    where = folder / LAYOUTS[layout]
    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = fake_images(n, split_seed)
        write_idx(where / IDX_FILES[(split, "images")], images, gzip=gz)
        write_idx(where / IDX_FILES[(split, "labels")], labels, gzip=gz)
    return folder


def fake_image_set(n: int = N_TRAIN, seed: int = 0):
    """A :class:`helpers.data.fashion.ImageSet` made in memory from :func:`fake_images` (no files)."""
    from helpers.data.fashion import ImageSet

    images, labels = fake_images(n, seed)
    X = torch.from_numpy(images).unsqueeze(1).float() / 255.0
    return ImageSet(X, torch.from_numpy(labels.astype(np.int64)))


# Test modules that compare two real trainings of the same report in one test: with the cache on, the second
# would read the first's runs back instead of training (helpers.cache), and the comparison would test nothing.
NO_CACHE_MODULES = ("tests.test_repeatable",)


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory):
    """The session's cache folder (for module-scoped fixtures, set up before any test's own), never the
    project's ``reports/.cache``; an inherited ``HELPERS_CACHE=off`` is dropped so the cache is tested."""
    saved = {k: os.environ.get(k) for k in ("HELPERS_CACHE_DIR", "HELPERS_CACHE")}
    os.environ["HELPERS_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-cache"))
    os.environ.pop("HELPERS_CACHE", None)
    yield Path(os.environ["HELPERS_CACHE_DIR"])
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def isolated_cache(request, tmp_path_factory, monkeypatch, session_cache_dir) -> Path:
    """Each test its own empty cache folder (``HELPERS_CACHE_DIR``, inherited by kernels and subprocesses), so
    no test reads back work another test did; off for :data:`NO_CACHE_MODULES`."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HELPERS_CACHE_DIR", str(folder))
    if request.module.__name__ in NO_CACHE_MODULES:
        monkeypatch.setenv("HELPERS_CACHE", "off")
    else:
        monkeypatch.delenv("HELPERS_CACHE", raising=False)
    return folder


@pytest.fixture(scope="module")
def torch_single_thread():
    """One intra-op thread for the module: tiny models on a small shared CPU run faster that way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory) -> Path:
    """A folder holding a fake Fashion-MNIST (200 train / 100 test, gzipped, flat layout)."""
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fake_fashion_mnist"), N_TRAIN, N_TEST)


@pytest.fixture(scope="session")
def fake_sets(fake_data_dir) -> dict:
    """``load_fashion_mnist(fake_data_dir)``: {"train": ImageSet, "test": ImageSet, "source": str}."""
    from helpers.data.fashion import load_fashion_mnist

    return load_fashion_mnist(fake_data_dir)


def stop_processes(procs) -> None:
    """Stop the processes a test started (Dask schedulers and workers), the last started first; kill any that do
    not end within 30 s."""
    import subprocess

    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(autouse=True)
def _in_the_repository_root(monkeypatch):
    """Every test starts in the repository root, as the README's commands are typed there, and whatever folder a
    test leaves the process in is undone after it (papermill's in-process ``chdir`` is not thread-safe: two runs in
    one process can leave the working folder in notebooks/, and a later test's relative paths would then miss)."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)


# The one smoke MLP report that several test files read (verify, hostile hand-ins, the interactive run's papermill
# side): the same notebook with the same parameters, so it is made once per test session, not once per file.
MLP_SMOKE_REPORT = {"profile": "smoke", "optimizers": ["adam"], "regularizers": ["none", "dropout"],
                    "author_name": "Ada"}


def make_mlp_smoke_report(folder: Path, data_dir: Path) -> Path:
    """Run :data:`MLP_SMOKE_REPORT` on ``data_dir`` as ``python -m helpers run`` does, into ``folder/mlp`` (HTML,
    metrics.json, the executed notebook; no checkpoints), with the cache off: every number is computed here."""
    from helpers.cli.runner import run_section  # lazy: this file loads before, and without, the code under test

    before = os.environ.get("HELPERS_CACHE")
    os.environ["HELPERS_CACHE"] = "off"
    try:
        status = run_section("mlp", output_dir=folder, formats=("html",), log=lambda *_: None, progress=False,
                             parameters={**MLP_SMOKE_REPORT, "data_dir": str(data_dir)})
    finally:
        os.environ.pop("HELPERS_CACHE") if before is None else os.environ.update(HELPERS_CACHE=before)
    assert status["status"] == "ok", status
    shutil.rmtree(folder / "mlp" / "checkpoints", ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def mlp_smoke_report(tmp_path_factory, fake_data_dir) -> Path:
    """A student's report folder ``.../ada`` holding ``mlp/{metrics.json, mlp.html, mlp.ipynb}`` of
    :data:`MLP_SMOKE_REPORT` on the fake data. Shared: a test copies it before changing anything in it.

    Under pytest-xdist the workers share one copy: the first to ask makes it under the session's common temporary
    folder while holding a file lock, the others wait for it and read it (a copy left half made by a failed worker
    is made again)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make_mlp_smoke_report(tmp_path_factory.mktemp("mlp-smoke") / "ada", fake_data_dir)
    shared = tmp_path_factory.getbasetemp().parent / "mlp-smoke-report"
    with FileLock(f"{shared}.lock"):
        if not (shared / "complete").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            make_mlp_smoke_report(shared / "ada", fake_data_dir)
            (shared / "complete").touch()
    return shared / "ada"
