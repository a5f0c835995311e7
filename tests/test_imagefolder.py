"""Image folders in the ImageFolder layout: loading, resizing, colour, and each layout error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data.imagefolder import ImageFolderError, load_folder_splits, load_image_folder, scan_image_folder
from helpers.sections.transfer import load_task

CLASSES = ("fracture", "normal")


def write_image(path: Path, value: int, *, size=(12, 10), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)
    return path


def make_folder(root: Path, *, n_train: int = 6, n_test: int = 3, classes=CLASSES, mode: str = "L") -> Path:
    """root/{train,test}/<class>/<i>.png; class k's pixels all equal 40 + 100 k."""
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(classes):
            for i in range(n):
                write_image(root / split / name / f"{i}.png", 40 + 100 * k, mode=mode)
    return root


def test_loads_both_splits_with_sorted_class_names(tmp_path):
    root = make_folder(tmp_path / "xray")
    out = load_image_folder(root, image_size=16)
    train, test = out["train"], out["test"]
    assert train.class_names == list(CLASSES) == test.class_names
    assert train.X.shape == (12, 1, 16, 16) and test.X.shape == (6, 1, 16, 16)
    assert train.X.dtype == torch.float32 and train.y.tolist() == [0] * 6 + [1] * 6
    assert torch.allclose(train.X[0], torch.full((1, 16, 16), 40 / 255), atol=1e-6)
    assert torch.allclose(train.X[-1], torch.full((1, 16, 16), 140 / 255), atol=1e-6)
    assert out["source"] == str(root.resolve())


def test_colour_is_consistent(tmp_path):
    root = make_folder(tmp_path / "mixed")
    write_image(root / "train" / "normal" / "colour.png", 200, mode="RGB")  # one colour image makes it all RGB
    out = load_image_folder(root, image_size=8)
    assert out["train"].X.shape[1] == 3 and out["test"].X.shape[1] == 3
    gray = load_image_folder(root, image_size=8, color="grayscale")
    assert gray["train"].X.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="color"):
        load_image_folder(root, color="sepia")


def test_other_files_and_hidden_folders_are_ignored(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "train" / "normal" / "notes.txt").write_text("not an image")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    assert load_image_folder(root, image_size=8)["train"].class_names == list(CLASSES)


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist"),
    ("no_test", "no test/ subfolder"),
    ("no_classes", "no class folders"),
    ("empty_class", "class folder with no images"),
    ("unreadable", "unreadable image file"),
    ("missing_from_test", "missing from test/"),
    ("missing_from_train", "missing from train/"),
])
def test_layout_errors_name_the_problem(tmp_path, breakage, message):
    root = tmp_path / "data"
    if breakage != "missing":
        make_folder(root)
    where = root
    if breakage == "no_test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").iterdir()):
            d.rmdir()
        (root / "test").rmdir()
    elif breakage == "no_classes":
        for f in (root / "train").rglob("*.png"):
            f.unlink()
        for d in (root / "train").iterdir():
            d.rmdir()
        where = root / "train"
    elif breakage == "empty_class":
        (root / "train" / "empty").mkdir()
        (root / "test" / "empty").mkdir()
        where = root / "train" / "empty"
    elif breakage == "unreadable":
        where = root / "test" / "normal" / "broken.png"
        where.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif breakage == "missing_from_test":
        write_image(root / "train" / "extra" / "0.png", 10)
        where = "extra"
    elif breakage == "missing_from_train":
        write_image(root / "test" / "extra" / "0.png", 10)
        where = "extra"
    with pytest.raises(ImageFolderError, match=message) as info:
        load_image_folder(root, image_size=8)
    assert str(where) in str(info.value)


def test_truncated_image_is_named(tmp_path):
    root = make_folder(tmp_path / "d")
    good = write_image(tmp_path / "big.png", 90, size=(64, 64))
    bad = root / "train" / "fracture" / "truncated.png"
    bad.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageFolderError, match="truncated.png"):
        load_image_folder(root)


def test_scan_lists_files_per_class(tmp_path):
    found = scan_image_folder(make_folder(tmp_path / "d", n_train=2, n_test=1))
    assert list(found["train"]) == list(CLASSES)
    assert [p.name for p in found["train"]["normal"]] == ["0.png", "1.png"]


def test_splits_and_caps(tmp_path):
    root = make_folder(tmp_path / "d", n_train=10, n_test=4)
    splits = load_folder_splits(root, image_size=8, val_fraction=0.2, seed=0, test_per_class=2)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (16, 4, 4)
    assert splits["val"].class_counts().tolist() == [2, 2]
    with pytest.raises(ImageFolderError, match="too few images"):
        load_folder_splits(make_folder(tmp_path / "tiny", n_train=1, n_test=1), val_fraction=0.2)


def test_transfer_task_from_a_folder(tmp_path):
    root = make_folder(tmp_path / "d", n_train=10, n_test=4, mode="RGB")
    task = load_task(dataset=str(root), image_size=32, labels_per_class=3, val_per_class="all", test_per_class=None,
                     val_fraction=0.2)
    assert task["train"].X.shape == (6, 3, 32, 32)
    assert len(task["val"]) == 4 and len(task["test"]) == 8
    assert task["train"].class_names == list(CLASSES)


def test_a_val_folder_is_read_as_the_validation_set(tmp_path):
    root = make_folder(tmp_path / "d", n_train=5, n_test=2)
    for k, name in enumerate(CLASSES):
        for i in range(3):
            write_image(root / "val" / name / f"{i}.png", 40 + 100 * k)
    assert [p.name for p in scan_image_folder(root)["val"]["normal"]] == ["0.png", "1.png", "2.png"]
    splits = load_folder_splits(root, image_size=8, val_fraction=0.2, seed=0)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (10, 6, 4)  # train/ is not split
    assert splits["validation"] == "val/ folder" and splits["val"].class_names == list(CLASSES)
    assert splits["val"].y.tolist() == [0, 0, 0, 1, 1, 1]
    plain = load_folder_splits(make_folder(tmp_path / "plain", n_train=5, n_test=2), image_size=8, val_fraction=0.2)
    assert plain["validation"] == "held out from train/" and len(plain["train"]) + len(plain["val"]) == 10


def test_a_val_folder_may_lack_a_class_but_not_add_one(tmp_path):
    root = make_folder(tmp_path / "d", n_train=3, n_test=1)
    write_image(root / "val" / "normal" / "0.png", 140)
    out = load_image_folder(root, image_size=8)
    assert out["val"].y.tolist() == [1] and out["val"].class_names == list(CLASSES)
    write_image(root / "val" / "unknown" / "0.png", 10)
    with pytest.raises(ImageFolderError, match=r"\['unknown'\] in val/ are missing from train/"):
        scan_image_folder(root)
