"""Fashion-MNIST on disk and in memory: finding, reading, splitting and batching.

The whole data set (70,000 images of 28x28 bytes, about 55 MB as float32) lives in
memory as tensors; batches are made by indexing, never by per-sample transforms.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import cache
from helpers.paths import DATA_DIR

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
PROJECT_DATA_DIR = DATA_DIR  # the checkout's data/; installed, a user folder (never site-packages)
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FASHION_MNIST_DIR"
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = (
    "Get the data with one of:\n"
    "  * pass download=True (torchvision downloads it into data/), or run `bash run.sh data`;\n"
    "  * on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
    f"(files land in {DEBIAN_DATA_DIR});\n"
    "  * copy the four IDX files (.gz or not) into data/ or a folder named by "
    f"data_dir= or ${ENV_VAR}."
)
# IDX type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur here.
_IDX_UBYTE = 0x08
# The published MD5s of Fashion-MNIST's files (github.com/zalandoresearch/fashion-mnist): of the .gz files as Zalando
# distributes them (torchvision checks these) and of the decoded IDX files. The decoded ones identify the data
# whatever the file form: Debian's dataset-fashion-mnist recompresses the files (other .gz bytes, the same
# decoded ones), and a folder of uncompressed files has no .gz bytes at all. ``verify`` checks a report's data by them.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": {"gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "idx": "f4a8712d7a061bf5bd6d2ca38dc4d50a"},
    "train-labels-idx1-ubyte": {"gz": "25c81989df183df01b3e8a0aad5dffbe", "idx": "9018921c3c673c538a1fc5bad174d6f9"},
    "t10k-images-idx3-ubyte": {"gz": "bef4ecab320f06d8554ea6380940ec79", "idx": "8181f5470baa50b63fa0f6fddb340f0a"},
    "t10k-labels-idx1-ubyte": {"gz": "bb300cfdad3c16e7a12a480ee83cd310", "idx": "15d484375f8d13e6eb1aabb0c3f46965"},
}


class DataNotFoundError(FileNotFoundError):
    """No Fashion-MNIST files in any of the places looked at."""


class CorruptDataError(ValueError):
    """An IDX file that is truncated, has a bad header or does not match its partner."""


@dataclass
class ImageSet:
    """Images ``X`` (N, C, H, W) float32 in [0, 1], labels ``y`` (N,) int64, class names."""

    X: torch.Tensor
    y: torch.Tensor
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index) -> ImageSet:
        return ImageSet(self.X[index], self.y[index], list(self.class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y.numpy(), minlength=self.num_classes)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array, checking its header and length."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip: bad header/CRC, truncated stream, corrupt deflate data
        raise CorruptDataError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CorruptDataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty file'})")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _IDX_UBYTE or ndim not in (1, 3):
        raise CorruptDataError(
            f"{path}: unsupported IDX header (type 0x{dtype_code:02x}, {ndim} dims); expected unsigned bytes, 1 or 3 dims"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    actual = len(raw) - header
    if actual != expected:
        raise CorruptDataError(
            f"{path}: header says shape {shape} ({expected:,} bytes of data) but the file holds {actual:,}: "
            "it is truncated or corrupt; delete it and get the data again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_md5(path: str | Path) -> str:
    """MD5 of an IDX file's decoded bytes, gzipped or not (compare :data:`FASHION_MNIST_MD5`'s ``idx`` values)."""
    h = hashlib.md5(usedforsecurity=False)
    with (gzip.open if Path(path).suffix == ".gz" else open)(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def contents_md5(files: dict) -> dict[str, str]:
    """``{file stem: MD5 of its decoded bytes}`` for :func:`find_data`'s four files: what the data are, in any form.
    It equals ``{stem: md5["idx"] for stem, md5 in FASHION_MNIST_MD5.items()}`` exactly for Fashion-MNIST."""
    return {FILES[key]: idx_md5(path) for key, path in sorted(files.items())}


def _find_file(folder: Path, stem: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw", "raw"):
        for name in (stem, stem + ".gz"):
            candidate = folder / sub / name
            if candidate.is_file():
                return candidate
    return None


def _files_in(folder: Path) -> dict | None:
    found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
    return found if all(found.values()) else None


def candidate_dirs(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The places looked at, in order: (why, folder)."""
    places = []
    if data_dir is not None:
        places.append(("data_dir parameter", Path(data_dir).expanduser()))
    if os.environ.get(ENV_VAR):
        places.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser()))
    places.append(("project data/ folder", PROJECT_DATA_DIR))
    places.append(("Debian package dataset-fashion-mnist", DEBIAN_DATA_DIR))
    return places


def find_data(data_dir: str | Path | None = None) -> dict:
    """Return the four IDX paths from the first place that has them all.

    An explicit ``data_dir`` that lacks the files is an error rather than a silent fall-through,
    so a typo never trains on some other copy of the data.
    """
    places = candidate_dirs(data_dir)
    for why, folder in places:
        files = _files_in(folder)
        if files:
            return files
        if why == "data_dir parameter":
            missing = [s for (k, s) in FILES.items() if _find_file(folder, s) is None]
            raise DataNotFoundError(
                f"data_dir={str(data_dir)!r} does not hold Fashion-MNIST (missing: {', '.join(missing)}).\n{HOW_TO_GET}"
            )
    looked = "\n".join(f"  * {folder}  ({why})" for why, folder in places)
    raise DataNotFoundError(f"Fashion-MNIST not found. Looked in:\n{looked}\n{HOW_TO_GET}")


def download(root: str | Path = PROJECT_DATA_DIR) -> dict:
    """Download with torchvision into ``root`` (needs the network)."""
    # lazy on purpose: torchvision's data sets only for the download
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root=str(root), train=train, download=True)
    return find_data(root)


def fetch(root: str | Path = PROJECT_DATA_DIR) -> str:
    """Make sure the data is somewhere findable; return how (used by the set-up script)."""
    try:
        files = find_data()
        return f"found: {files[('train', 'images')].parent}"
    except DataNotFoundError:
        pass
    try:
        download(root)
        return f"downloaded with torchvision into {root}"
    except Exception as exc:  # network errors come in many types
        reason = f"torchvision download failed ({type(exc).__name__}: {exc})"
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        done = subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], capture_output=True, text=True)
        if done.returncode == 0 and _files_in(DEBIAN_DATA_DIR):
            return f"installed Debian package dataset-fashion-mnist into {DEBIAN_DATA_DIR}"
        reason += f"; apt-get install dataset-fashion-mnist failed: {done.stderr.strip()[-300:]}"
    raise DataNotFoundError(f"Could not get Fashion-MNIST: {reason}.\n{HOW_TO_GET}")


def load_fashion_mnist(data_dir: str | Path | None = None, *, download_if_missing: bool = False) -> dict:
    """Load train and test sets as :class:`ImageSet` (images scaled to [0, 1]).

    Returns ``{"train": ImageSet, "test": ImageSet, "source": str, "cache": dict}``. The decoded files are
    kept in the cache (:mod:`helpers.cache`, kind ``data``, keyed by the four files' digests): reading them
    back takes about a quarter of the time of decompressing and parsing them (0.2 s against 0.7 s for the
    whole set); ``cache`` says whether they came from there.
    """
    try:
        files = find_data(data_dir)
    except DataNotFoundError:
        if not download_if_missing:
            raise
        files = download(data_dir or PROJECT_DATA_DIR)
    out = {"source": str(files[("train", "images")].parent)}
    arrays, out["cache"] = _decoded(files)
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        if images.ndim != 3 or labels.ndim != 1:
            raise CorruptDataError(f"{files[(split, 'images')]}: images must have 3 dims and labels 1")
        if len(images) != len(labels):
            raise CorruptDataError(
                f"{files[(split, 'images')]} has {len(images):,} images but {files[(split, 'labels')]} "
                f"has {len(labels):,} labels"
            )
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise CorruptDataError(f"{files[(split, 'labels')]}: label {labels.max()} is not a Fashion-MNIST class (0-9)")
        X = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
        out[split] = ImageSet(X, torch.from_numpy(labels.astype(np.int64)))
    return out


def _decoded(files: dict) -> tuple[dict, dict]:
    """The four IDX files as arrays, from the cache when these very files were decoded before; and the cache's
    note on it (:func:`helpers.cache.hit_record`, ``miss_record`` or ``off_record``)."""
    if not cache.enabled():
        return {key: read_idx(path) for key, path in files.items()}, cache.off_record()
    parts = {"what": "fashion_mnist", "files": {FILES[k]: cache.file_digest(p) for k, p in files.items()},
             "format": cache.FORMAT, "code": cache.code_digest()}
    key = cache.make_key(parts)
    entry = cache.lookup("data", key)
    saved = cache.load(entry, "arrays.pt") if entry is not None else None
    if saved is not None:
        return {k: saved[FILES[k]].numpy() for k in files}, cache.hit_record(entry)
    arrays = {key: read_idx(path) for key, path in files.items()}
    tensors = {FILES[k]: torch.from_numpy(a.copy()) for k, a in arrays.items()}
    stored = cache.store("data", key, lambda tmp: torch.save(tensors, tmp / "arrays.pt"), parts=parts,
                         made_by=cache.producer())
    return arrays, cache.miss_record(key, stored)


def check_classes(classes, num_classes: int = len(CLASS_NAMES), name: str = "classes") -> list[int] | None:
    """Validate a class subset: known, unique indices (None means all)."""
    if classes is None:
        return None
    classes = list(classes)
    bad = [c for c in classes if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{name}={classes!r}: unknown class index {bad[0]!r}; allowed: integers 0..{num_classes - 1}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"{name}={classes!r}: class index {repeated[0]} is repeated; "
                         f"allowed: distinct integers 0..{num_classes - 1}")
    if len(classes) < 2:
        raise ValueError(f"{name}={classes!r}: a classifier needs at least 2 classes; "
                         f"allowed: 2 or more distinct integers 0..{num_classes - 1}")
    return [int(c) for c in classes]


def select_classes(data: ImageSet, classes) -> ImageSet:
    """Keep only ``classes`` (original indices) and relabel them 0..k-1 in the given order."""
    classes = check_classes(classes, data.num_classes)
    if classes is None:
        return data
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    keep = remap[data.y] >= 0
    return ImageSet(data.X[keep], remap[data.y[keep]], [data.class_names[c] for c in classes])


def train_val_split(data: ImageSet, *, val_fraction: float, seed: int = 0, stratified: bool = True):
    """Split into (train, val) by index; stratified keeps class proportions (scikit-learn)."""
    # lazy on purpose: scikit-learn takes a second to import, only a stratified split needs it
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}: must be strictly between 0 and 1")
    n_val = round(len(data) * val_fraction)
    need = data.num_classes if stratified else 1  # scikit-learn's stratified split needs this on both sides
    if n_val < need or len(data) - n_val < need:
        raise ValueError(
            f"val_fraction={val_fraction!r} of {len(data)} samples leaves {n_val} for validation and "
            f"{len(data) - n_val} for training: impossible split"
            + (f" (stratified needs at least one per class on each side, {data.num_classes})" if stratified else "")
        )
    idx = np.arange(len(data))
    train_idx, val_idx = train_test_split(
        idx, test_size=n_val, random_state=seed, stratify=data.y.numpy() if stratified else None
    )
    return data[torch.from_numpy(np.sort(train_idx))], data[torch.from_numpy(np.sort(val_idx))]


def subsample(data: ImageSet, *, per_class: int | str | None, seed: int = 0) -> ImageSet:
    """``data`` with at most ``per_class`` samples of each class, drawn with ``seed`` (for the smoke profile, the
    grid's subsets and few-label transfer); ``per_class`` None or ``"all"`` gives ``data`` itself."""
    if per_class is None or per_class == "all":
        return data
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return data[torch.sort(torch.cat(keep)).values]


def concat(a: ImageSet, b: ImageSet) -> ImageSet:
    """Join two sets with the same classes (train + validation for the final retraining)."""
    if a.class_names != b.class_names:
        raise ValueError("cannot join image sets with different classes")
    return ImageSet(torch.cat([a.X, b.X]), torch.cat([a.y, b.y]), list(a.class_names))


def to_patches(X: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut (N, C, H, W) images into non-overlapping p x p patches: (N, num_patches, C*p*p).

    Flatten the result for an MLP; H and W must be multiples of ``patch_size``.
    """
    n, c, h, w = X.shape
    if patch_size < 1 or h % patch_size or w % patch_size:
        allowed = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
        raise ValueError(f"patch_size={patch_size!r}: must divide the image size {h}x{w}; allowed: {allowed}")
    p = patch_size
    patches = X.unfold(2, p, p).unfold(3, p, p)  # N, C, H/p, W/p, p, p
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n, (h // p) * (w // p), c * p * p)


def batch_indices(n: int, *, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                  drop_last: bool = False):
    """Yield index tensors of batches over ``n`` samples."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def data_summary(splits: dict[str, ImageSet]) -> pd.DataFrame:  # noqa: F821
    """Class balance table: one row per class, one column per split, plus totals."""
    first = next(iter(splits.values()))
    table = pd.DataFrame({name: s.class_counts() for name, s in splits.items()}, index=first.class_names)
    table.index.name = "class"
    table.loc["total"] = table.sum()
    return table


def load_splits(*, data_dir=None, classes=None, val_fraction: float = 0.15, stratified: bool = True, seed: int = 0,
                train_per_class: int | None = None, test_per_class: int | None = None,
                download_if_missing: bool = False) -> dict:
    """Train/validation/test sets for a report section.

    Class subsets are selected (and relabelled) first, then the smoke profile's per-class caps are
    applied, then the training set is split. Returns ``{"train", "val", "test", "source", "cache"}``
    (``cache``: :func:`load_fashion_mnist`'s note on the decoded files).
    """
    raw = load_fashion_mnist(data_dir, download_if_missing=download_if_missing)
    train, test = select_classes(raw["train"], classes), select_classes(raw["test"], classes)
    if train_per_class:
        train = subsample(train, per_class=train_per_class, seed=seed)
    if test_per_class:
        test = subsample(test, per_class=test_per_class, seed=seed)
    train, val = train_val_split(train, val_fraction=val_fraction, seed=seed, stratified=stratified)
    return {"train": train, "val": val, "test": test, "source": raw["source"], "cache": raw["cache"]}
