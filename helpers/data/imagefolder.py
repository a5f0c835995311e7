"""A folder of images in the ImageFolder layout, read into memory as an :class:`~helpers.data.fashion.ImageSet`.

The layout (as torchvision's ``ImageFolder``, one folder per class, one such tree per split)::

    root/train/<class name>/*.png
    root/test/<class name>/*.png
    root/val/<class name>/*.png      (optional: the validation set; without it, part of train/ is held out)

Every image is decoded once with PIL, converted to grayscale or RGB (the same for the whole folder),
resized to ``image_size`` x ``image_size`` and kept as a float tensor in [0, 1], so training indexes
tensors exactly as it does for Fashion-MNIST. A bad layout fails with :class:`ImageFolderError`,
whose message names the folder or file at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from helpers.data.fashion import ImageSet, subsample, train_val_split

SPLITS = ("train", "test")
OPTIONAL_SPLITS = ("val",)  # read when present
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
COLORS = ("auto", "grayscale", "rgb")
# PIL modes with a single intensity channel; anything else is read as colour.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
LAYOUT_HELP = ("expected the ImageFolder layout: <root>/train/<class>/<image files> and "
               "<root>/test/<class>/<image files>, the same class folders in both (and optionally "
               "<root>/val/<class>/<image files>, a validation set)")


class ImageFolderError(ValueError):
    """A folder of images that cannot be used as a data set (the message says why and where)."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ImageFolderError(f"{folder}: no class folders; {LAYOUT_HELP}")
    found = {}
    for class_dir in class_dirs:
        files = _images_in(class_dir)
        if not files:
            raise ImageFolderError(
                f"{class_dir}: class folder with no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        found[class_dir.name] = files
    return found


def scan_image_folder(root: str | Path) -> dict[str, dict[str, list[Path]]]:
    """Find the image files of each split and class, checking the layout.

    Parameters
    ----------
    root : path
        The folder holding ``train/`` and ``test/`` (and optionally ``val/``).

    Returns
    -------
    dict
        ``{"train": {class name: [paths]}, "test": {...}}``, classes in sorted order, with ``"val"`` too
        when the folder has a ``val/`` subfolder.

    Raises
    ------
    ImageFolderError
        Folder missing, no ``train/`` or ``test/`` subfolder, no class folders, a class folder with no
        images, a class that is in one split but not the other, or a ``val/`` class that ``train/`` lacks.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"image folder {str(root)!r} does not exist or is not a folder; {LAYOUT_HELP}")
    found = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise ImageFolderError(f"{root}: no {split}/ subfolder (subfolders found: {present or 'none'}); {LAYOUT_HELP}")
        found[split] = _class_folders(folder)
    train_only = sorted(set(found["train"]) - set(found["test"]))
    test_only = sorted(set(found["test"]) - set(found["train"]))
    if train_only:
        raise ImageFolderError(f"{root}: class(es) {train_only} in train/ are missing from test/; "
                               "every class needs test images")
    if test_only:
        raise ImageFolderError(f"{root}: class(es) {test_only} in test/ are missing from train/; "
                               "the model cannot learn a class it never sees")
    for split in OPTIONAL_SPLITS:
        if (root / split).is_dir():
            found[split] = _class_folders(root / split)
            unknown = sorted(set(found[split]) - set(found["train"]))
            if unknown:
                raise ImageFolderError(f"{root}: class(es) {unknown} in {split}/ are missing from train/; "
                                       f"every {split}/ class must be a class of train/")
    return found


def read_image(path: Path, *, decode: bool = True):
    """Open one image file with PIL; ``decode`` reads all pixels, so a truncated file fails here.

    Without ``decode`` only the header is read (enough for the mode and size).
    """
    # a process-wide switch: WeasyPrint turns it on when imported, and a truncated file would then load as a
    # partly grey image instead of failing here
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        img = Image.open(path)
        if not decode:
            return img
        with img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFolderError(f"{path}: unreadable image file ({type(exc).__name__}: {exc})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def _is_gray(path: Path) -> bool:
    img = read_image(path, decode=False)
    with img:
        return img.mode in _GRAY_MODES


def to_tensor(img, *, image_size: int, channels: int) -> torch.Tensor:
    """A PIL image as a (C, image_size, image_size) float tensor in [0, 1] (bilinear resize)."""
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.float32) / 255.0
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def load_image_folder(root: str | Path, *, image_size: int = 28, color: str = "auto") -> dict:
    """Load ``root/train`` and ``root/test`` (and ``root/val`` when present) into memory.

    Parameters
    ----------
    root : path
        Folder in the ImageFolder layout (see the module docstring).
    image_size : int
        Images are resized to ``image_size`` x ``image_size`` (non-square images are stretched).
    color : {"auto", "grayscale", "rgb"}
        ``auto`` gives one channel when every image is grayscale and three otherwise.

    Returns
    -------
    dict
        ``{"train": ImageSet, "test": ImageSet, "source": str}``, and ``"val"`` when the folder has a
        ``val/`` subfolder; class names are the folder names of ``train/``, in sorted order, and labels
        index them (a ``val/`` folder may lack some classes).
    """
    if color not in COLORS:
        raise ValueError(f"color={color!r}: unknown; allowed: {', '.join(COLORS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r}: must be a positive integer")
    files = scan_image_folder(root)
    class_names = list(files["train"])
    splits = [s for s in (*SPLITS, *OPTIONAL_SPLITS) if s in files]
    items = {split: [(p, label) for label, name in enumerate(class_names) for p in files[split].get(name, [])]
             for split in splits}
    if color == "auto":  # headers only: the pixels are decoded once, below, one image at a time
        channels = 1 if all(_is_gray(p) for split in splits for p, _ in items[split]) else 3
    else:
        channels = 1 if color == "grayscale" else 3
    out = {"source": str(Path(root).expanduser().resolve())}
    for split in splits:
        X = torch.stack([to_tensor(read_image(p), image_size=image_size, channels=channels) for p, _ in items[split]])
        y = torch.tensor([label for _, label in items[split]], dtype=torch.long)
        out[split] = ImageSet(X, y, list(class_names))
    return out


def load_folder_splits(root: str | Path, *, image_size: int = 28, color: str = "auto", val_fraction: float = 0.15,
                       stratified: bool = True, seed: int = 0, train_per_class: int | None = None,
                       test_per_class: int | None = None) -> dict:
    """Train/validation/test sets from an image folder, as :func:`helpers.data.fashion.load_splits` gives for Fashion-MNIST.

    The folder's own ``val/`` images are the validation set when it has them; otherwise ``val_fraction`` of
    ``train/`` is held out. Returns ``{"train", "val", "test", "source", "validation"}``, ``validation``
    saying which (``"val/ folder"`` or ``"held out from train/"``).
    """
    raw = load_image_folder(root, image_size=image_size, color=color)
    train, test = raw["train"], raw["test"]
    if train_per_class:
        train = subsample(train, per_class=train_per_class, seed=seed)
    if test_per_class:
        test = subsample(test, per_class=test_per_class, seed=seed)
    if "val" in raw:
        return {"train": train, "val": raw["val"], "test": test, "source": raw["source"], "validation": "val/ folder"}
    try:
        train, val = train_val_split(train, val_fraction=val_fraction, seed=seed, stratified=stratified)
    except ValueError as exc:
        raise ImageFolderError(f"{raw['source']}/train: too few images to hold out a validation set: {exc}") from None
    return {"train": train, "val": val, "test": test, "source": raw["source"], "validation": "held out from train/"}
