"""Interrupted runs: resuming is exact, finished runs are not trained again, a corrupt checkpoint is named,
a section past its time limit or with a killed kernel is reported as such, and an unwritable output folder is
refused before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.data.augment import Augment
from helpers.engine.checkpoints import CheckpointError
from helpers.engine.training import fit
from helpers.models.networks import build_mlp
from helpers.reporting.fingerprint import differences
from tests.conftest import fake_image_set

ROOT = Path(__file__).resolve().parent.parent


def train(folder, *, epochs=3, resume=False, every=0):
    torch.manual_seed(0)
    model = build_mlp(hidden_sizes=(16,), dropout=0.2)
    data = fake_image_set(120)
    history = fit(model, data[:90], data[90:], num_epochs=epochs, batch_size=16, seed=0, device="cpu",
                  augment=Augment(noise_std=0.05), checkpoint_dir=folder, checkpoint_every=every, resume=resume,
                  progress=False)
    return model, history


def same_numbers(h1, h2):
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [{k: r[k] for k in keys} for r in h1] == [{k: r[k] for k in keys} for r in h2]


def test_a_run_interrupted_after_epoch_two_resumes_exactly(tmp_path):
    whole_model, whole = train(tmp_path / "whole", every=1)
    # the state after epoch 2, as a kill -9 during epoch 3 leaves it
    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "whole" / "epoch_002.pt", tmp_path / "cut" / "last.pt")
    model, resumed = train(tmp_path / "cut", resume=True)
    assert same_numbers(whole, resumed)
    assert all(torch.equal(a, b) for a, b in zip(whole_model.state_dict().values(), model.state_dict().values()))


def test_a_finished_run_is_read_back_not_trained(tmp_path):
    whole_model, whole = train(tmp_path)
    stamp = (tmp_path / "last.pt").stat().st_mtime_ns
    model, again = train(tmp_path, resume=True)
    assert same_numbers(whole, again) and (tmp_path / "last.pt").stat().st_mtime_ns == stamp  # nothing trained
    assert all(torch.equal(a, b) for a, b in zip(whole_model.state_dict().values(), model.state_dict().values()))


def test_a_corrupt_checkpoint_is_named_and_a_clean_restart_works(tmp_path):
    tmp_path.joinpath("last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"last\.pt cannot be read.*without --resume"):
        train(tmp_path, resume=True)
    _, history = train(tmp_path, resume=False)
    assert len(history) == 3


# --- the command line, on fixture data ---------------------------------------------------------------------

# Slow enough to interrupt (a few seconds per configuration on the 200 fixture images), small enough for CI.
SLOW = ["-p", "epochs", "30", "-p", "batch_size", "4", "-p", "optimizers", "[adam]",
        "-p", "regularizers", "[none, dropout, batch_norm]"]


def cli(*args, **kwargs):
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "helpers", "run", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finished_runs(folder: Path) -> int:
    runs = folder / "mlp" / "checkpoints" / "runs"
    return sum(1 for d in runs.glob("*") if (d / "last.pt").exists()) if runs.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fake_data_dir):
    out = tmp_path_factory.mktemp("whole")
    done = cli("mlp", "--profile", "quick", "--formats", "html", "--output-dir", out, "-p", "data_dir",
               fake_data_dir, *SLOW)
    assert done.wait(600) == 0, done.stdout.read()
    return json.loads((out / "mlp" / "metrics.json").read_text())


def test_kill_9_mid_grid_then_resume_gives_the_uninterrupted_metrics(uninterrupted, tmp_path, fake_data_dir):
    out = tmp_path / "cut"
    args = ("mlp", "--profile", "quick", "--formats", "html", "--output-dir", out, "-p", "data_dir", fake_data_dir,
            *SLOW)
    first = cli(*args, start_new_session=True)
    deadline = time.time() + 300
    while finished_runs(out) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the run ended before it could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)  # the command, its kernel and all: as a laptop shut mid-grid
    first.wait(60)
    assert not (out / "mlp" / "metrics.json").exists()
    second = cli(*args, "--resume")
    assert second.wait(600) == 0, second.stdout.read()
    resumed = json.loads((out / "mlp" / "metrics.json").read_text())
    assert differences(uninterrupted, resumed) == []


def test_a_section_past_its_timeout_is_reported_and_keeps_its_notebook(tmp_path, fake_data_dir):
    done = cli("mlp", "--profile", "quick", "--formats", "html", "--output-dir", tmp_path, "-p", "data_dir",
               fake_data_dir, *SLOW, "--timeout", "8")
    code, text = done.wait(300), done.stdout.read()
    assert code == 1 and "timed out" in text and "stopped after 8 s" in text, text
    assert (tmp_path / "mlp" / "mlp.ipynb").exists()  # the partial notebook
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary[0]["status"] == "timed out"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the kernel process through /proc")
def test_a_kernel_killed_from_outside_is_reported_as_such(tmp_path, fake_data_dir):
    done = cli("mlp", "--profile", "quick", "--formats", "html", "--output-dir", tmp_path, "-p", "data_dir",
               fake_data_dir, *SLOW)
    deadline = time.time() + 120
    while finished_runs(tmp_path) < 1 and time.time() < deadline:
        time.sleep(0.2)
    kernels = children(done.pid)
    assert kernels, "no kernel process found"
    for pid in kernels:
        os.kill(pid, signal.SIGKILL)
    code, text = done.wait(300), done.stdout.read()
    assert code == 1 and "kernel died" in text, text
    assert json.loads((tmp_path / "run.json").read_text())[0]["status"] == "kernel died"


def test_an_output_folder_that_cannot_be_written_is_refused_before_running(tmp_path, fake_data_dir):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")
    done = cli("mlp", "--profile", "smoke", "--output-dir", blocker / "class", "-p", "data_dir", fake_data_dir)
    code, text = done.wait(120), done.stdout.read()
    assert code != 0 and "cannot write to --output-dir" in text and "Traceback" not in text, text
    assert blocker.read_text().startswith("a file")  # what was there is left as it was


def test_resume_from_a_corrupt_checkpoint_names_it_and_a_clean_run_follows(tmp_path, fake_data_dir):
    args = ("mlp", "--profile", "smoke", "--formats", "html", "--output-dir", tmp_path, "-p", "data_dir",
            fake_data_dir, "-p", "optimizers", "[adam]", "-p", "regularizers", "[none]")
    assert cli(*args).wait(300) == 0
    [checkpoint] = sorted((tmp_path / "mlp" / "checkpoints" / "runs").glob("*/last.pt"))[:1]
    checkpoint.write_bytes(b"\x00" * 100)  # as a disk error or a half-copied folder leaves it
    resumed = cli(*args, "--resume")
    code, text = resumed.wait(300), resumed.stdout.read()
    assert code == 1 and "CheckpointError" in text and str(checkpoint) in text, text
    assert cli(*args).wait(300) == 0  # without --resume the run starts afresh and succeeds


def test_a_batch_with_resume_skips_rows_already_complete(tmp_path, fake_data_dir):
    batch = tmp_path / "class.csv"
    batch.write_text("name,author_id\nAda,0123\nBob,0042\n")
    args = ("--batch", batch, "mlp", "--profile", "smoke", "--formats", "html", "--output-dir", tmp_path / "out",
            "-p", "data_dir", fake_data_dir, "-p", "optimizers", "[adam]", "-p", "regularizers", "[none]")
    first = cli(*args)
    assert first.wait(600) == 0, first.stdout.read()
    shutil.rmtree(tmp_path / "out" / "Bob" / "mlp")  # as if Bob's row had been cut short
    again = cli(*args, "--resume")
    code, text = again.wait(600), again.stdout.read()
    assert code == 0 and "Ada: complete already, skipped" in text and "Bob: ok" in text, text
    metrics = json.loads((tmp_path / "out" / "Ada" / "mlp" / "metrics.json").read_text())
    assert metrics["parameters"]["author_id"] == "0123"  # an identifier stays text through the batch
