"""Batches on Dask, for real: a ``LocalCluster`` started by the command, and a scheduler and two workers started as
separate processes, one of them killed in the middle of a row. Rows are the smallest report there is (the MLP
section, smoke profile, one configuration, on the tiny fixture data set, HTML only)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("distributed")

from tests.conftest import stop_processes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("name,author_id,regularizers,init\n"
        "Ada Lovelace,A1,[none],default\n"
        "Bob Byte,0042,[dropout],xavier\n"
        "Bad Row,B3,[none],bogus\n"  # refused by the notebook's config cell: a failed row with its own error
        "Cy Typo,C4,[dropout],he\n")
GOOD = ("Ada_Lovelace", "Bob_Byte", "Cy_Typo")
# a local cluster speaks TLS where a throwaway certificate can be made (helpers.cli.dask_security)
LOCAL = "tls" if shutil.which("openssl") or importlib.util.find_spec("cryptography") else "tcp"


def env():
    clean = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return {**clean, "HELPERS_PROGRESS": "0"}


def batch_command(batch: Path, out: Path, data_dir: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "helpers", "run", "mlp", "--batch", str(batch), "--profile", "smoke", "--formats",
            "html", "--output-dir", str(out), "-p", "data_dir", str(data_dir), "-p", "optimizers", "[adam]",
            "--executor", "dask", *map(str, extra)]


def summary_rows(out: Path) -> list[dict]:
    with (out / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_cluster_batch(tmp_path_factory, fake_data_dir):
    folder = tmp_path_factory.mktemp("dask_local")
    (folder / "class.csv").write_text(ROWS)
    done = subprocess.run(batch_command(folder / "class.csv", folder / "out", fake_data_dir, "--jobs", 2), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env())
    return done, folder / "out"


def test_a_local_cluster_runs_the_batch_and_reports_the_bad_row(local_cluster_batch):
    done, out = local_cluster_batch
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"dask: scheduler {LOCAL}://127.0.0.1:" in done.stdout and "2 worker(s)" in done.stdout
    for name in GOOD:
        metrics = json.loads((out / name / "mlp" / "metrics.json").read_text())
        assert metrics["profile"] == "smoke" and (out / name / "mlp" / "mlp.html").exists()
    assert not (out / "Bad_Row" / "mlp" / "metrics.json").exists()
    rows = {r["name"]: r for r in summary_rows(out)}
    assert rows["Bad Row"]["status"] == "failed"
    assert "ConfigError" in rows["Bad Row"]["error"] and "bogus" in rows["Bad Row"]["error"]
    assert all(rows[n.replace("_", " ")]["status"] == "ok" for n in GOOD)
    assert all(r["worker"].startswith(f"{LOCAL}://127.0.0.1:") for r in rows.values())  # run by the cluster's workers
    # each row's result is printed once, and the whole batch's progress line was shown
    for line in (2, 3, 4, 5):
        assert done.stdout.count(f"line {line}: ") == 1, done.stdout
    assert "[batch] 4/4 done (1 failed), 0 running, 0 waiting" in done.stderr
    assert ", 2 running, " in done.stderr and "Traceback" not in done.stderr, done.stderr  # rows announced their start


@pytest.fixture()
def separate_cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, stopped afterwards."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(scheduler_file)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if scheduler_file.exists() and scheduler_file.read_text().strip():
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--name", f"w{i}",
                 "--no-dashboard"], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        yield address, procs[1:]
    finally:
        stop_processes(procs)


def row_processes(worker: subprocess.Popen) -> list[psutil.Process]:
    """The ``python -m helpers run`` processes under one ``dask worker`` command (its nanny's worker's children)."""
    try:
        tree = psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for p in tree:
        try:
            if p.cmdline()[1:4] == ["-m", "helpers", "run"]:
                found.append(p)
        except psutil.Error:
            pass
    return found


def folder_of(row: psutil.Process) -> str:
    try:
        cmd = row.cmdline()
        joined = [a.split("=", 1)[1] for a in cmd if a.startswith("--output-dir=")]  # --output-dir=FOLDER
        return Path(joined[0] if joined else cmd[cmd.index("--output-dir") + 1]).name
    except (psutil.Error, ValueError, IndexError):
        return ""


def test_a_worker_killed_mid_row_loses_no_row_and_reports_none_twice(separate_cluster, tmp_path, fake_data_dir):
    address, workers = separate_cluster
    # three rows (the two good ones first, so one of them is the row killed) keep the test short
    (tmp_path / "class.csv").write_text("\n".join(ROWS.splitlines()[:4]) + "\n")
    out = tmp_path / "out"
    batch = subprocess.Popen(batch_command(tmp_path / "class.csv", out, fake_data_dir, "--scheduler", address),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    # wait until a row is running under the first worker, then kill that worker process outright (SIGKILL: no
    # chance to clean up, as when the kernel's OOM killer or a lost machine takes it)
    victim, rows = None, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not rows:
        rows = [p for p in row_processes(workers[0]) + row_processes(workers[1]) if folder_of(p) in GOOD]
        time.sleep(0.2)
    assert rows, "no good row started on either worker"
    row = rows[0]
    name = folder_of(row)
    time.sleep(3)  # well into the row: its kernel is up and training
    doomed = [row, *row.children(recursive=True)]  # the row and its kernel
    victim = row.parent()
    victim.send_signal(signal.SIGKILL)
    # the row dies with its worker (PR_SET_PDEATHSIG), and its kernel with the row: no second writer later
    gone, alive = psutil.wait_procs(doomed, timeout=15)
    assert not alive, f"still running after their worker was killed: {alive}"
    stdout, stderr = batch.communicate(timeout=400)
    assert batch.returncode == 1, stdout + stderr  # the bad row
    results = summary_rows(out)
    assert sorted(r["name"] for r in results) == ["Ada Lovelace", "Bad Row", "Bob Byte"]
    by_folder = {r["report"].split("/")[0]: r for r in results}
    for good in ("Ada_Lovelace", "Bob_Byte"):
        assert by_folder[good]["status"] == "ok", by_folder[good]
        assert json.loads((out / good / "mlp" / "metrics.json").read_text())["profile"] == "smoke"
    for line in (2, 3, 4):
        assert stdout.count(f"line {line}: ") == 1, stdout  # none reported twice
    # the killed row was started again, on another worker process
    starts = [json.loads(s) for s in (out / name / "attempts.jsonl").read_text().splitlines()]
    assert len(starts) == 2 and starts[0]["worker"] != starts[1]["worker"], starts
    assert by_folder[name]["attempts"] == "2"


def test_a_row_past_its_row_timeout_is_stopped_with_its_process(tmp_path, fake_data_dir):
    from helpers.cli.rows import run_row

    start = time.monotonic()
    result = run_row(tmp_path / "Ada", ["mlp"], {"data_dir": str(fake_data_dir), "profile": "smoke"}, no_input=False,
                     formats=["html"], threads=1, row_timeout=1.5)
    assert result["status"] == "timed out" and "--row-timeout" in result["error"]
    assert time.monotonic() - start < 30
    assert result["attempts"] == 1 and (tmp_path / "Ada" / "run.log").exists()


def test_an_unreachable_scheduler_is_named(tmp_path):
    (tmp_path / "class.csv").write_text("name\nAda\n")
    done = subprocess.run(batch_command(tmp_path / "class.csv", tmp_path / "out", tmp_path, "--scheduler",
                                        "tcp://127.0.0.1:9"), cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert done.returncode != 0 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr


def listening(process: psutil.Process) -> set[str]:
    """The addresses ``process`` and its children accept connections on."""
    found = set()
    for p in [process, *process.children(recursive=True)]:
        try:
            found |= {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def test_a_gpu_cluster_pins_one_worker_per_device_listens_on_loopback_only_and_rows_take_one_each():
    """The local cluster a CUDA machine gets, started here with two made-up device ids: each worker sees its own
    CUDA_VISIBLE_DEVICES and offers one GPU, tasks asking for {"GPU": 1} run on both, and no part of it (scheduler,
    nannies, workers, their HTTP servers) listens anywhere but 127.0.0.1."""
    from distributed import Client

    from helpers.cli.executors import local_worker_specs, start_local_cluster

    before = listening(psutil.Process())
    cluster = start_local_cluster(local_worker_specs(jobs=1, gpus=["0", "1"], cores=2), retries=1)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(2)
            workers = client.scheduler_info()["workers"]
            assert all(w["resources"] == {"GPU": 1} for w in workers.values())
            hosts = {a.split("://")[1].rsplit(":", 1)[0] for a in [cluster.scheduler_address, *workers]}
            hosts |= {w["nanny"].split("://")[1].rsplit(":", 1)[0] for w in workers.values()}
            assert hosts == {"127.0.0.1"}, hosts
            assert listening(psutil.Process()) - before == {"127.0.0.1"}  # not 0.0.0.0, ::, or the LAN address
            seen = client.gather([client.submit(lambda i: (os.environ["CUDA_VISIBLE_DEVICES"], time.sleep(0.5)), i,
                                                resources={"GPU": 1}, pure=False) for i in range(4)])
            assert sorted(d for d, _ in seen) == ["0", "0", "1", "1"]
    finally:
        cluster.close()
