"""Work done once (helpers.cache): keys that change with anything that decides a result, entries that appear
whole or not at all, finished runs, pretrainings and decoded data read back instead of computed, and reports
that say so without changing their numbers or fingerprint. ``--no-cache`` and ``verify`` compute again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from helpers import cache
from helpers.cli.verify import rerun
from helpers.data.fashion import ImageSet, load_fashion_mnist
from helpers.engine import training
from helpers.engine.experiment import run_cache_parts, run_experiment
from helpers.engine.training import checkpointing, fit
from helpers.models.networks import build_mlp
from helpers.reporting.fingerprint import differences
from helpers.sections import backbones
from helpers.sections.backbones import BackboneWeights
from tests.conftest import fake_image_set, make_fake_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
BASE = {"epochs": 2, "lr": 0.01, "author_name": "Ada", "author_id": "0042"}


def tiny_train_one(s, *, train, val, seed, desc="tiny"):
    """A small MLP run, checkpointed like every section's (the engine's ``train_one`` contract)."""
    torch.manual_seed(seed)
    model = build_mlp(hidden_sizes=(16,), dropout=0.2)
    history = fit(model, train, val, num_epochs=s["epochs"], batch_size=16, lr=s["lr"], seed=seed, device="cpu",
                  progress=False, desc=desc, **checkpointing(s))
    return {"model": model, "history": history}


@pytest.fixture
def batches(monkeypatch):
    """How many training batches were run (evaluation does not count)."""
    calls = []
    real = training.Classification.loss
    monkeypatch.setattr(training.Classification, "loss", lambda self, out, y: calls.append(1) or real(self, out, y))
    return calls


def experiment(folder, data=None, **settings):
    data = data if data is not None else fake_image_set(120)
    return run_experiment([{"name": "only"}], base={**BASE, "output_dir": str(folder), **settings},
                          train_one=tiny_train_one, train=data[:90], val=data[90:], seed=0)


# --- keys ----------------------------------------------------------------------------------------------------

def test_a_key_changes_with_any_setting_seed_or_data_and_with_nothing_else():
    data = fake_image_set(120)
    train, val = data[:90], data[90:]

    def key(settings=BASE, seed=0, train=train):
        return cache.make_key(run_cache_parts(tiny_train_one, settings, train=train, val=val, seed=seed))

    assert cache.make_key({"a": 1, "b": [1, 2]}) == cache.make_key({"b": [1, 2], "a": 1})
    assert key() == key()
    # another student, another report folder or data folder: the same work, the same entry
    assert key({**BASE, "author_name": "Bob", "output_dir": "/elsewhere", "data_dir": "/copy/of/the/data"}) == key()
    assert key({**BASE, "lr": 0.02}) != key()
    assert key(seed=1) != key()
    changed = ImageSet(train.X.clone(), train.y, train.class_names)
    changed.X[0, 0, 0, 0] += 0.5  # one pixel of one image
    assert key(train=changed) != key()
    parts = run_cache_parts(tiny_train_one, BASE, train=train, val=val, seed=0)
    assert {"code", "torch", "device", "train", "val"} <= set(parts) and parts["device"] == "cpu"


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package's Python files that :func:`helpers.cache.code_digest` reads instead of the package
    (its ``__file__`` pointed into the copy), a function giving the copy's digest as it stands now, and the real
    package's digest."""
    cache.code_digest.cache_clear()
    real = cache.code_digest()
    root = Path(cache.__file__).resolve().parent
    copy = tmp_path / "helpers"
    for path in root.rglob("*.py"):
        (copy / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy / path.relative_to(root))
    monkeypatch.setattr(cache, "__file__", str(copy / "cache.py"))

    def digest() -> str:
        cache.code_digest.cache_clear()
        return cache.code_digest()

    yield copy, digest, real
    cache.code_digest.cache_clear()  # the next caller computes the real package's digest again


@pytest.mark.parametrize("module, counts", [
    ("engine/training.py", True), ("engine/experiment.py", True), ("data/fashion.py", True),
    ("models/networks.py", True), ("sections/backbones.py", True), ("cache.py", True),
    ("engine/new_module.py", True),  # a module added to a computing room counts from its first line
    ("cli/main.py", False), ("cli/batch.py", False), ("cli/new_module.py", False), ("reporting/report.py", False),
    ("reporting/plots.py", False), ("engine/progress.py", False), ("escape.py", False), ("__init__.py", False),
])
def test_the_code_digest_changes_with_a_computing_module_only(package_copy, module, counts):
    """A changed line of a module that computes results makes every key new; a changed line of the command line,
    the reports or the progress bars keeps the cache valid (:func:`helpers.cache.computes` decides which)."""
    copy, digest, real = package_copy
    before = digest()
    assert before == real  # the same files, the same digest, wherever they are
    path = copy / module
    original = path.read_text() if path.exists() else None
    path.write_text((original or "") + "\nX = 1  # one line more\n")
    assert (digest() != before) is counts
    assert cache.computes(module) is counts
    if original is None:
        path.unlink()
    else:
        path.write_text(original)
    assert digest() == before  # the change undone, the old entries are found again


def test_a_batch_row_elsewhere_gets_the_folder_and_the_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("HELPERS_CACHE_SHARED", raising=False)
    assert cache.row_environment() == {"HELPERS_CACHE_DIR": str((tmp_path / "shared").resolve()), "HELPERS_CACHE": "on",
                                       "HELPERS_CACHE_SHARED": "0"}
    monkeypatch.setenv("HELPERS_CACHE", "off")
    monkeypatch.setenv("HELPERS_CACHE_SHARED", "1")  # a shared cache is shared on the workers too
    assert cache.row_environment()["HELPERS_CACHE"] == "off" and cache.row_environment()["HELPERS_CACHE_SHARED"] == "1"


# --- entries appear whole --------------------------------------------------------------------------------------

def test_an_entry_is_invisible_until_complete_and_the_first_writer_wins():
    started, release, results = threading.Event(), threading.Event(), []

    def slow_write(tmp):
        (tmp / "part1").write_text("first")
        started.set()
        release.wait(10)
        (tmp / "part2").write_text("first")

    writer = threading.Thread(target=lambda: results.append(
        cache.store("runs", "ab" * 32, slow_write, parts={}, made_by=cache.producer(output_dir="one"))))
    writer.start()
    assert started.wait(10)
    assert cache.lookup("runs", "ab" * 32) is None and not cache.entry_path("runs", "ab" * 32).exists()
    # another process finishes the same entry meanwhile: its copy is in place, ours is dropped
    other = cache.store("runs", "ab" * 32, lambda tmp: (tmp / "part1").write_text("second"), parts={},
                        made_by=cache.producer(output_dir="two"))
    release.set()
    writer.join(10)
    entry = cache.lookup("runs", "ab" * 32)
    assert results == [entry] and other == entry
    assert (entry / "part1").read_text() == "second" and not (entry / "part2").exists()
    assert cache.read_meta(entry)["digests"] == {"part1": hashlib.sha256(b"second").hexdigest()}
    assert list((cache.cache_dir() / "tmp").iterdir()) == []  # nothing half-written is left behind


def test_a_failed_write_leaves_no_entry(recwarn):
    def failing(tmp):
        (tmp / "weights.pt").write_text("half")
        raise OSError(28, "No space left on device")

    assert cache.store("data", "cd" * 32, failing, parts={}, made_by={}) is None
    assert "No space left" in str(recwarn.pop(UserWarning).message)
    assert cache.lookup("data", "cd" * 32) is None and list((cache.cache_dir() / "tmp").iterdir()) == []


def test_off_reads_and_writes_nothing(monkeypatch, isolated_cache):
    monkeypatch.setenv("HELPERS_CACHE", "off")
    assert cache.store("runs", "ef" * 32, lambda tmp: None, parts={}, made_by={}) is None
    assert cache.lookup("runs", "ef" * 32) is None and list(isolated_cache.iterdir()) == []


# --- finished runs --------------------------------------------------------------------------------------------

def test_a_finished_run_is_read_back_not_trained(tmp_path, batches):
    first = experiment(tmp_path / "first")
    trained = len(batches)
    assert trained > 0 and first["runs"][0]["cache"]["hit"] is False and first["runs"][0]["cache"]["stored"]
    again = experiment(tmp_path / "second", author_name="Bob")
    assert len(batches) == trained  # not one training batch
    record = again["runs"][0]["cache"]
    # what made it: when and how long, never who or where (Ada's name, id and folder stay out of Bob's report)
    assert record["hit"] and record["own"] and set(record["produced_by"]) == {"created", "seconds"}
    assert "Ada" not in json.dumps(record) and str(tmp_path / "first") not in json.dumps(record)
    h1, h2 = first["histories"]["only"], again["histories"]["only"]
    assert [{k: r[k] for k in ("train_loss", "val_loss", "val_acc")} for r in h1] == \
           [{k: r[k] for k in ("train_loss", "val_loss", "val_acc")} for r in h2]
    assert all(torch.equal(a, b) for a, b in zip(first["models"]["only"].state_dict().values(),
                                                  again["models"]["only"].state_dict().values()))
    # the table keeps the training time of the run that produced it
    assert again["table"]["seconds"].iloc[0] == pytest.approx(record["produced_by"]["seconds"])
    assert list((tmp_path / "second" / "checkpoints" / "runs").glob("*/last.pt"))  # the report has its checkpoints


def test_a_damaged_entry_is_trained_again(tmp_path, batches):
    first = experiment(tmp_path / "first")
    for path in cache.cache_dir().rglob("last.pt"):
        path.unlink()  # hard-linked to the report's own checkpoint: replace, never write in place
        path.write_bytes(b"\x00" * 100)
    trained = len(batches)
    with pytest.warns(UserWarning, match="last.pt does not match its digest"):
        again = experiment(tmp_path / "second")
    assert len(batches) == 2 * trained and again["runs"][0]["cache"]["hit"] is False
    assert again["runs"][0]["cache"]["stored"]  # the damaged entry was replaced by the new result
    third = experiment(tmp_path / "third")
    assert third["runs"][0]["cache"]["hit"] and len(batches) == 2 * trained
    assert again["table"]["val_acc"].iloc[0] == first["table"]["val_acc"].iloc[0]


def test_a_changed_setting_or_data_or_no_cache_trains(tmp_path, batches, monkeypatch):
    experiment(tmp_path / "first")
    for folder, kwargs in (("lr", {"lr": 0.02}), ("data", {"data": fake_image_set(120, seed=5)})):
        before = len(batches)
        result = experiment(tmp_path / folder, **kwargs)
        assert len(batches) > before and result["runs"][0]["cache"]["hit"] is False, folder
    monkeypatch.setenv("HELPERS_CACHE", "off")
    before = len(batches)
    result = experiment(tmp_path / "off")
    assert len(batches) > before and result["runs"][0]["cache"] == cache.off_record()


# --- pretraining and data -------------------------------------------------------------------------------------

def test_the_same_pretraining_is_read_back(tmp_path, monkeypatch):
    data = fake_image_set(60)
    source = {"train": data[:40], "val": data[40:]}
    calls, real = [], backbones.pretrain
    monkeypatch.setattr(backbones, "pretrain", lambda *a, **k: calls.append(a[0]) or real(*a, **k))

    def weights(folder, **made_by):
        w = BackboneWeights(source, num_epochs=1, batch_size=16, device="cpu", save_dir=folder, made_by=made_by)
        return w, w.get("pretrain", "resnet18", 32)

    first, w1 = weights(tmp_path / "a", output_dir="reports/a")
    second, w2 = weights(tmp_path / "b", output_dir="reports/b")
    assert calls == ["resnet18"]  # pretrained once
    assert all(torch.equal(w1["state_dict"][k], w2["state_dict"][k]) for k in w1["state_dict"])
    rec1, rec2 = first.records()["resnet18"], second.records()["resnet18"]
    assert rec1["cache"]["hit"] is False and rec2["cache"]["hit"] is True
    assert set(rec2["cache"]["produced_by"]) == {"created", "seconds"}
    assert rec2["history"] == rec1["history"] and rec2["seconds"] == rec1["seconds"]
    assert (tmp_path / "b" / "pretrained_resnet18.pt").is_file()  # the report still saves its checkpoint
    assert "read from the cache" in second.describe("resnet18", 32) and "reports/a" not in second.describe("resnet18", 32)
    # the runs' keys name the pretraining: other pretraining settings, other runs
    s = {"weights": "pretrain", "backbone": "resnet18", "image_size": 32}
    other = BackboneWeights(source, num_epochs=2, batch_size=16, device="cpu")
    assert first.cache_key(s) == second.cache_key(s) != other.cache_key(s)


def test_decoded_data_are_read_back_and_a_changed_file_misses(tmp_path, fake_data_dir):
    first, again = load_fashion_mnist(fake_data_dir), load_fashion_mnist(fake_data_dir)
    assert first["cache"]["hit"] is False and again["cache"]["hit"] is True
    for split in ("train", "test"):
        assert torch.equal(first[split].X, again[split].X) and torch.equal(first[split].y, again[split].y)
    other = make_fake_fashion_mnist(tmp_path / "other", seed=7)
    assert load_fashion_mnist(other)["cache"]["hit"] is False


# --- whole reports through the command line --------------------------------------------------------------------

def cli(*args, cache_dir=None):
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    env.pop("HELPERS_CACHE_DIR")  # as a user's shell has it: the command picks the folder
    extra = ["--cache-dir", str(cache_dir)] if cache_dir else []
    done = subprocess.run([sys.executable, "-m", "helpers", "run", *map(str, args), "--formats", "html", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_a_second_transfer_batch_does_no_pretraining(tmp_path, fake_data_dir):
    batch = tmp_path / "class.csv"
    batch.write_text("name,author_id\nAda,0123\n")
    common = ("--batch", batch, "transfer", "--profile", "smoke", "-p", "data_dir", fake_data_dir)
    cli(*common, "--output-dir", tmp_path / "monday")
    assert (tmp_path / "monday" / ".cache" / "pretraining").is_dir()  # the default: beside the batch's reports
    cli(*common, "--output-dir", tmp_path / "tuesday", cache_dir=tmp_path / "monday" / ".cache")
    monday, tuesday = metrics(tmp_path / "monday" / "Ada" / "transfer"), metrics(tmp_path / "tuesday" / "Ada" / "transfer")
    assert monday["pretraining"]["resnet18"]["cache"]["hit"] is False
    pre = tuesday["pretraining"]["resnet18"]["cache"]
    assert pre["hit"] is True and pre["own"] and set(pre["produced_by"]) == {"created", "seconds"}
    assert tuesday["cache"]["runs_trained"] == 0 and tuesday["cache"]["runs_from_cache"] == len(tuesday["configurations"])
    assert tuesday["fingerprint"] == monday["fingerprint"]  # the same numbers, the same fingerprint
    page = (tmp_path / "tuesday" / "Ada" / "transfer" / "transfer.html").read_text()
    assert "not pretrained again here: read from the cache" in page


def test_an_mlp_rerun_comes_from_the_cache_and_no_cache_or_verify_trains_again(tmp_path, fake_data_dir, monkeypatch):
    common = ("mlp", "--profile", "smoke", "-p", "data_dir", fake_data_dir, "-p", "optimizers", "[adam]",
              "-p", "regularizers", "[none, dropout]")
    cli(*common, "--output-dir", tmp_path / "first")
    cli(*common, "--output-dir", tmp_path / "second", cache_dir=tmp_path / "first" / ".cache")
    cli(*common, "--output-dir", tmp_path / "third", "--no-cache")
    first, second, third = (metrics(tmp_path / run / "mlp") for run in ("first", "second", "third"))
    runs = len(first["cache"]["runs"])  # the grid and the final retraining
    assert runs == 3 and first["cache"]["runs_trained"] == runs
    assert second["cache"]["runs_from_cache"] == runs and second["cache"]["runs_trained"] == 0
    assert all(r["own"] and set(r["produced_by"]) == {"created", "seconds"} for r in second["cache"]["runs"])
    assert second["fingerprint"] == first["fingerprint"]
    assert third["cache"]["enabled"] is False and third["cache"]["runs_trained"] == runs
    assert not (tmp_path / "third" / ".cache").exists()
    assert third["fingerprint"]["results"] == first["fingerprint"]["results"]
    # verify reruns for real, even where the cache holds every run
    monkeypatch.setenv("HELPERS_CACHE_DIR", str(tmp_path / "first" / ".cache"))
    (tmp_path / "verify").mkdir()
    again = rerun(second, workdir=tmp_path / "verify")
    assert again["cache"]["enabled"] is False and differences(second, again) == []
    shutil.rmtree(tmp_path / "verify")
