"""helpers.data.fashion: finding and reading the IDX files, splits, subsets, patches and batches."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers.data.fashion as hd
from helpers.data.fashion import (
    CLASS_NAMES,
    CorruptDataError,
    DataNotFoundError,
    ImageSet,
    batch_indices,
    check_classes,
    concat,
    data_summary,
    find_data,
    load_fashion_mnist,
    read_idx,
    select_classes,
    subsample,
    to_patches,
    train_val_split,
)
from tests.conftest import IDX_FILES, fake_images, make_fake_fashion_mnist, write_idx


@pytest.fixture(autouse=True)
def isolated_places(tmp_path, monkeypatch):
    """No real data anywhere: empty project and Debian folders, no $FASHION_MNIST_DIR."""
    project, debian = tmp_path / "project_data", tmp_path / "debian"
    project.mkdir()
    debian.mkdir()
    monkeypatch.setattr(hd, "PROJECT_DATA_DIR", project)
    monkeypatch.setattr(hd, "DEBIAN_DATA_DIR", debian)
    monkeypatch.delenv(hd.ENV_VAR, raising=False)
    return {"project": project, "debian": debian}


def small(folder, n_train=30, n_test=20, **kw) -> Path:
    return make_fake_fashion_mnist(folder, n_train, n_test, **kw)


# --- finding the data: each place in the search order --------------------------------------------


def test_explicit_data_dir(tmp_path):
    folder = small(tmp_path / "mine")
    sets = load_fashion_mnist(folder)
    assert len(sets["train"]) == 30 and len(sets["test"]) == 20
    assert Path(sets["source"]) == folder


def test_env_var(tmp_path, monkeypatch):
    folder = small(tmp_path / "env", n_train=40)
    monkeypatch.setenv(hd.ENV_VAR, str(folder))
    sets = load_fashion_mnist()
    assert len(sets["train"]) == 40
    assert Path(sets["source"]) == folder


def test_project_folder(isolated_places):
    small(isolated_places["project"], n_train=50)
    sets = load_fashion_mnist()
    assert len(sets["train"]) == 50
    assert Path(sets["source"]) == isolated_places["project"]


def test_debian_folder(isolated_places):
    small(isolated_places["debian"], n_train=60, gz=True)
    sets = load_fashion_mnist()
    assert len(sets["train"]) == 60
    assert Path(sets["source"]) == isolated_places["debian"]


def test_search_order_first_place_wins(tmp_path, monkeypatch, isolated_places):
    small(isolated_places["debian"], n_train=60)
    assert len(load_fashion_mnist()["train"]) == 60
    small(isolated_places["project"], n_train=50)
    assert len(load_fashion_mnist()["train"]) == 50  # project data/ before Debian
    monkeypatch.setenv(hd.ENV_VAR, str(small(tmp_path / "env", n_train=40)))
    assert len(load_fashion_mnist()["train"]) == 40  # $FASHION_MNIST_DIR before data/
    assert len(load_fashion_mnist(small(tmp_path / "explicit", n_train=30))["train"]) == 30  # data_dir first


def test_candidate_dirs_order(tmp_path, monkeypatch, isolated_places):
    monkeypatch.setenv(hd.ENV_VAR, str(tmp_path / "env"))
    places = hd.candidate_dirs(tmp_path / "explicit")
    assert [folder for _, folder in places] == [
        tmp_path / "explicit", tmp_path / "env", isolated_places["project"], isolated_places["debian"]]


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [True, False])
def test_layouts_and_compression_read_exact_content(tmp_path, layout, gz):
    folder = small(tmp_path / "d", layout=layout, gz=gz, seed=3)
    files = find_data(folder)
    sub = folder / "FashionMNIST" / "raw" if layout == "torchvision" else folder
    for key, stem in IDX_FILES.items():
        assert files[key] == sub / (stem + (".gz" if gz else ""))
    sets = load_fashion_mnist(folder)
    images, labels = fake_images(30, seed=3)
    train = sets["train"]
    assert train.X.shape == (30, 1, 28, 28) and train.X.dtype == torch.float32
    assert train.y.dtype == torch.int64
    assert torch.equal(train.X, torch.from_numpy(images).float().unsqueeze(1) / 255.0)
    assert torch.equal(train.y, torch.from_numpy(labels.astype(np.int64)))
    assert 0.0 <= train.X.min() and train.X.max() <= 1.0
    assert train.class_names == list(CLASS_NAMES)


def test_read_idx_plain_and_gz_equal(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", arr, gzip=False))
    packed = read_idx(write_idx(tmp_path / "b-idx3-ubyte", arr, gzip=True))
    np.testing.assert_array_equal(plain, arr)
    np.testing.assert_array_equal(packed, arr)


# --- not finding the data ---------------------------------------------------------------------------


def test_no_data_error_names_every_place(tmp_path, monkeypatch, isolated_places):
    env = tmp_path / "env_empty"
    env.mkdir()
    monkeypatch.setenv(hd.ENV_VAR, str(env))
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist()
    message = str(info.value)
    for folder in (env, isolated_places["project"], isolated_places["debian"]):
        assert str(folder) in message
    assert "$FASHION_MNIST_DIR" in message and "project data/ folder" in message
    assert "dataset-fashion-mnist" in message  # says how to get it
    assert isinstance(info.value, FileNotFoundError)


def test_explicit_data_dir_missing_files_is_an_error_not_a_fall_through(tmp_path, isolated_places):
    small(isolated_places["project"])  # would be found if the explicit folder fell through
    partial = tmp_path / "partial"
    images, labels = fake_images(10)
    write_idx(partial / IDX_FILES[("train", "images")], images)
    write_idx(partial / IDX_FILES[("train", "labels")], labels)
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(partial)
    message = str(info.value)
    assert str(partial) in message
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message


def test_explicit_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataNotFoundError, match="does_not_exist"):
        find_data(tmp_path / "does_not_exist")


# --- corrupt files ------------------------------------------------------------------------------------


def _image_file(folder: Path, gz: bool) -> Path:
    return folder / (IDX_FILES[("train", "images")] + (".gz" if gz else ""))


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file(tmp_path, gz):
    folder = small(tmp_path / "d", gz=gz)
    path = _image_file(folder, gz)
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    raw = raw[:-100]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(CorruptDataError, match=re.escape(str(path))) as info:
        load_fashion_mnist(folder)
    assert "truncated" in str(info.value)


def test_truncated_header(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(CorruptDataError, match="truncated header"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"")
    with pytest.raises(CorruptDataError, match="empty file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_bad_magic(tmp_path, gz):
    folder = small(tmp_path / "d", gz=gz)
    path = folder / (IDX_FILES[("test", "labels")] + (".gz" if gz else ""))
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    raw[0:2] = b"PK"
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(CorruptDataError, match=re.escape(str(path))) as info:
        load_fashion_mnist(folder)
    assert "bad magic" in str(info.value)


def test_unsupported_idx_type(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0\0\0\0")  # 0x0D: float
    with pytest.raises(CorruptDataError, match="unsupported IDX header"):
        read_idx(path)


def test_not_gzip_at_all(tmp_path):
    folder = small(tmp_path / "d")
    path = _image_file(folder, True)
    path.write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(CorruptDataError, match=re.escape(str(path))) as info:
        load_fashion_mnist(folder)
    assert "gzip" in str(info.value)


def _flip_byte(raw: bytes, index: int) -> bytes:
    out = bytearray(raw)
    out[index] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("damage", [
    lambda raw: raw[:200],  # truncated stream
    lambda raw: raw[:10] + b"\xff" + raw[11:],  # first deflate block header: reserved block type 3 -> zlib.error
    lambda raw: _flip_byte(raw, -8),  # CRC32 in the gzip trailer
], ids=["truncated", "bad-deflate", "crc-mismatch"])
def test_gzip_damage_names_the_file(tmp_path, damage):
    folder = small(tmp_path / "d")
    path = _image_file(folder, True)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptDataError, match=re.escape(str(path))):
        load_fashion_mnist(folder)


def test_images_labels_length_mismatch(tmp_path):
    folder = small(tmp_path / "d")
    _, labels = fake_images(25)
    labels_path = write_idx(folder / IDX_FILES[("train", "labels")], labels)
    with pytest.raises(CorruptDataError) as info:
        load_fashion_mnist(folder)
    message = str(info.value)
    assert str(_image_file(folder, True)) in message and str(labels_path) in message
    assert "30 images" in message and "25 labels" in message


def test_label_out_of_range(tmp_path):
    folder = small(tmp_path / "d")
    _, labels = fake_images(20, seed=1)
    labels[3] = 10
    labels_path = write_idx(folder / IDX_FILES[("test", "labels")], labels)
    with pytest.raises(CorruptDataError, match=re.escape(str(labels_path))):
        load_fashion_mnist(folder)


def test_images_with_wrong_number_of_dims(tmp_path):
    folder = small(tmp_path / "d")
    path = write_idx(folder / IDX_FILES[("train", "images")], np.zeros(30, dtype=np.uint8))
    with pytest.raises(CorruptDataError, match=re.escape(str(path))):
        load_fashion_mnist(folder)


# --- ImageSet, splits and subsets -------------------------------------------------------------------


def id_set(labels, class_names=None) -> ImageSet:
    """An ImageSet whose single pixel is the sample's index, so subsets can be traced back."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    X = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1)
    return ImageSet(X, labels) if class_names is None else ImageSet(X, labels, list(class_names))


def ids(data: ImageSet) -> list[int]:
    return data.X.flatten().long().tolist()


def imbalanced_labels() -> torch.Tensor:
    # class c has 10 + 4 c samples (10..46, 280 in all), interleaved
    labels = torch.cat([torch.full((10 + 4 * c,), c) for c in range(10)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_image_set_basics():
    data = id_set([0, 1, 1, 9])
    assert len(data) == 4 and data.num_classes == 10
    assert data.class_counts().tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    part = data[torch.tensor([3, 1])]
    assert ids(part) == [3, 1] and part.y.tolist() == [9, 1]


@pytest.mark.parametrize("stratified", [True, False])
def test_split_sizes_disjoint_and_complete(stratified):
    data = id_set(imbalanced_labels())
    train, val = train_val_split(data, val_fraction=0.25, seed=0, stratified=stratified)
    assert len(val) == 70 and len(train) == 210
    assert set(ids(train)).isdisjoint(ids(val))
    assert sorted(ids(train) + ids(val)) == list(range(280))
    # labels travel with their samples
    assert torch.equal(data.y[torch.tensor(ids(val))], val.y)


def test_stratified_split_keeps_class_proportions():
    data = id_set(imbalanced_labels())
    _, val = train_val_split(data, val_fraction=0.25, seed=4, stratified=True)
    expected = data.class_counts() * 0.25
    assert np.all(np.abs(val.class_counts() - expected) < 1.0), (val.class_counts(), expected)


def test_random_split_is_not_stratified_by_design():
    # over several seeds a random split departs from the exact class proportions somewhere
    data = id_set(imbalanced_labels())
    expected = data.class_counts() * 0.25
    worst = max(np.abs(train_val_split(data, val_fraction=0.25, seed=s, stratified=False)[1].class_counts()
                       - expected).max() for s in range(5))
    assert worst >= 1.0


@pytest.mark.parametrize("stratified", [True, False])
def test_split_seed_determinism(stratified):
    data = id_set(imbalanced_labels())
    a = train_val_split(data, val_fraction=0.2, seed=7, stratified=stratified)[1]
    b = train_val_split(data, val_fraction=0.2, seed=7, stratified=stratified)[1]
    c = train_val_split(data, val_fraction=0.2, seed=8, stratified=stratified)[1]
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match=re.escape(f"val_fraction={fraction!r}")):
        train_val_split(id_set(imbalanced_labels()), val_fraction=fraction)


@pytest.mark.parametrize("fraction,stratified,n", [
    (0.02, True, 200),   # 4 validation samples for 10 classes
    (0.97, True, 200),   # 6 training samples for 10 classes
    (0.1, False, 3),     # no validation sample at all
    (0.9, False, 3),     # no training sample at all
])
def test_impossible_split_names_val_fraction(fraction, stratified, n):
    data = id_set(torch.arange(n) % 10)
    with pytest.raises(ValueError, match=re.escape(f"val_fraction={fraction!r}")) as info:
        train_val_split(data, val_fraction=fraction, stratified=stratified)
    assert "impossible split" in str(info.value)


def test_select_classes_remaps_labels_and_names():
    labels = torch.arange(50) % 10
    data = id_set(labels)
    sub = select_classes(data, [1, 3, 5, 7, 9])
    assert sub.class_names == ["Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot"]
    assert sub.num_classes == 5 and len(sub) == 25
    original = labels[torch.tensor(ids(sub))]
    assert torch.equal(sub.y, (original - 1) // 2)  # 1->0, 3->1, 5->2, 7->3, 9->4
    # the order given is the new label order
    swapped = select_classes(data, [9, 0])
    assert swapped.class_names == ["Ankle boot", "T-shirt/top"]
    assert torch.equal(swapped.y, (labels[torch.tensor(ids(swapped))] == 0).long())
    assert select_classes(data, None) is data


@pytest.mark.parametrize("classes,message", [
    ([1, 10], "unknown class index 10"),
    ([-1, 2], "unknown class index -1"),
    ([1, "3"], "unknown class index '3'"),
    ([True, 2], "unknown class index True"),
    ([1.0, 2], "unknown class index 1.0"),
    ([1, 3, 1], "class index 1 is repeated"),
    ([4], "at least 2 classes"),
])
def test_select_classes_errors(classes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        select_classes(id_set(torch.arange(20) % 10), classes)


def test_check_classes_accepts_numpy_ints():
    assert check_classes(np.array([2, 0])) == [2, 0]
    assert check_classes(None) is None


def test_subsample():
    data = id_set(imbalanced_labels())
    sub = subsample(data, per_class=12, seed=0)
    assert sub.class_counts().tolist() == [10] + [12] * 9  # class 0 has only 10
    assert ids(sub) == sorted(ids(sub))  # kept in the original order
    assert torch.equal(data.y[torch.tensor(ids(sub))], sub.y)
    assert ids(subsample(data, per_class=12, seed=0)) == ids(sub)
    assert ids(subsample(data, per_class=12, seed=1)) != ids(sub)
    assert subsample(data, per_class=None) is data and subsample(data, per_class="all") is data  # no cap


def test_concat_and_class_mismatch():
    a, b = id_set([0, 1]), id_set([2, 3])
    both = concat(a, b)
    assert both.y.tolist() == [0, 1, 2, 3] and len(both.X) == 4
    with pytest.raises(ValueError, match="different classes"):
        concat(a, select_classes(id_set([0, 1, 2]), [0, 1]))


def test_data_summary():
    a, b = id_set([0, 0, 1, 9]), id_set([1, 2])
    table = data_summary({"train": a, "test": b})
    assert list(table.columns) == ["train", "test"]
    assert table.loc["T-shirt/top", "train"] == 2 and table.loc["Ankle boot", "train"] == 1
    assert table.loc["Pullover", "test"] == 1
    assert table.loc["total"].tolist() == [4, 2]
    assert len(table) == 11


# --- patches and batches --------------------------------------------------------------------------------


def test_to_patches_shape_and_content():
    X = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    patches = to_patches(X, 4)
    assert patches.shape == (3, 49, 16)
    # patch k is row k // 7, column k % 7 of the 7x7 grid, flattened row by row
    for n, i, j in [(0, 0, 0), (1, 2, 5), (2, 6, 6), (0, 6, 0)]:
        expected = X[n, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(-1)
        assert torch.equal(patches[n, 7 * i + j], expected)
    assert to_patches(X, 28).shape == (3, 1, 784)
    assert to_patches(X, 1).shape == (3, 784, 1)


def test_to_patches_multichannel_content():
    X = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    patches = to_patches(X, 2)
    assert patches.shape == (2, 6, 12)
    # row 1, column 2 of the 2x3 grid: channels first, then the 2x2 pixels
    assert torch.equal(patches[1, 5], X[1, :, 2:4, 4:6].reshape(-1))


@pytest.mark.parametrize("size", [0, 3, 5, 29])
def test_to_patches_bad_size(size):
    with pytest.raises(ValueError, match=re.escape(f"patch_size={size}")) as info:
        to_patches(torch.zeros(1, 1, 28, 28), size)
    assert "[1, 2, 4, 7, 14, 28]" in str(info.value)


def test_batch_indices_cover_every_index_once():
    g = torch.Generator().manual_seed(0)
    batches = list(batch_indices(103, batch_size=10, shuffle=True, generator=g))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    every = torch.cat(batches)
    assert sorted(every.tolist()) == list(range(103))
    assert every.tolist() != list(range(103))  # shuffled


def test_batch_indices_in_order_and_drop_last():
    in_order = torch.cat(list(batch_indices(25, batch_size=8, shuffle=False))).tolist()
    assert in_order == list(range(25))
    dropped = list(batch_indices(25, batch_size=8, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(0)))
    assert [len(b) for b in dropped] == [8, 8, 8]
    assert len(set(torch.cat(dropped).tolist())) == 24


def test_batch_indices_repeat_with_seed():
    def order(seed):
        return torch.cat(list(batch_indices(50, batch_size=7, shuffle=True,
                                            generator=torch.Generator().manual_seed(seed)))).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_fake_data_fixture(fake_data_dir, fake_sets):
    """The shared fixture other test files rely on: every class present in both splits."""
    assert (fake_data_dir / "train-images-idx3-ubyte.gz").is_file()
    assert len(fake_sets["train"]) == 200 and len(fake_sets["test"]) == 100
    assert fake_sets["train"].class_counts().tolist() == [20] * 10
    assert fake_sets["test"].class_counts().tolist() == [10] * 10
