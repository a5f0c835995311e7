"""A shared cache and a Dask cluster, attacked as a hostile user of the same machine or network would.

Cache entries are planted, altered, replaced by links, FIFOs, huge or broken files and other users' files: none
of them decides a result (the work is computed instead, and a damaged entry replaced), none stops a run, and no
entry carries its maker's name, id, folder or host into another student's report. Dask schedulers given by
address are checked before anything connects; a TLS scheduler started with the README's commands is used with
Dask's own TLS settings, and a client without the certificate is turned away. (The local clusters' listening
addresses are tested in ``test_dask_batch.py``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from helpers import cache
from helpers.data.fashion import load_fashion_mnist
from helpers.reporting import metrics_file, report
from tests.conftest import stop_processes

TEST_LABELS = "t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def not_shared(monkeypatch):
    """The default: only this user's entries are read (whatever the developer's shell says)."""
    monkeypatch.delenv("HELPERS_CACHE_SHARED", raising=False)


def data_entry(data_dir) -> tuple[dict, Path]:
    """The real decoded data and the cache entry they were stored in."""
    first = load_fashion_mnist(data_dir)
    assert first["cache"]["hit"] is False and first["cache"]["stored"]
    return first, Path(first["cache"]["entry"])


def plant_zero_labels(entry: Path) -> None:
    """What a hostile user writes: the same arrays, every test label 0 (a loadable, plausible file)."""
    saved = torch.load(entry / "arrays.pt", weights_only=True)
    saved[TEST_LABELS] = torch.zeros_like(saved[TEST_LABELS])
    (entry / "arrays.pt").unlink()  # a new file, not the report's (hard links elsewhere stay as they are)
    torch.save(saved, entry / "arrays.pt")


def reload(data_dir, *, match: str) -> dict:
    with pytest.warns(UserWarning, match=match):
        return load_fashion_mnist(data_dir)


def another_user(monkeypatch, *paths: Path) -> None:
    """Pretend ``paths`` (and everything under them; a file by its inode, as a hard link is) belong to another uid:
    tests run as one user, and not always as root (who could chown)."""
    inodes = {os.lstat(q).st_ino for p in paths for q in [p, *(p.rglob("*") if p.is_dir() else [])]}
    real = cache.trust.owner_of
    monkeypatch.setattr(cache.trust, "owner_of", lambda path: os.getuid() + 1 if os.lstat(path).st_ino in inodes
                        else real(path))


# --- the cases ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("digest", ["kept", "removed"])
def test_a_planted_arrays_file_is_recomputed_and_replaced(fake_data_dir, digest):
    first, entry = data_entry(fake_data_dir)
    plant_zero_labels(entry)
    if digest == "removed":  # as entries were written before: a meta.json without digests
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "digests"}))
    again = reload(fake_data_dir, match=f"{entry}.*(arrays.pt does not match its digest|no digests)")
    assert again["cache"]["hit"] is False and torch.equal(again["test"].y, first["test"].y)
    assert again["cache"]["stored"]  # replaced by the data decoded again
    third = load_fashion_mnist(fake_data_dir)
    assert third["cache"]["hit"] is True and torch.equal(third["test"].y, first["test"].y)


def test_another_users_entry_is_not_read_unless_the_cache_is_shared(fake_data_dir, monkeypatch):
    first, entry = data_entry(fake_data_dir)
    another_user(monkeypatch, entry)
    again = reload(fake_data_dir, match="made by another user.*HELPERS_CACHE_SHARED=1")
    assert again["cache"]["hit"] is False and again["cache"]["stored"] is False
    assert (entry / "meta.json").is_file()  # theirs: left alone, not replaced
    monkeypatch.setenv("HELPERS_CACHE_SHARED", "1")  # an explicit choice to trust them
    shared = load_fashion_mnist(fake_data_dir)
    assert shared["cache"]["hit"] is True and shared["cache"]["own"] is False
    assert "another user's run (a shared cache)" in cache.describe(shared["cache"])


def test_shared_cache_is_an_explicit_choice_on_the_command_line(monkeypatch, tmp_path):
    from helpers.cli.batch import ROW_ENV
    from helpers.cli.main import build_parser, use_cache

    monkeypatch.setenv("HELPERS_CACHE_SHARED", "0")
    use_cache(build_parser().parse_args(["run", "mlp", "--output-dir", str(tmp_path)]))
    assert not cache.trust.shared()  # the default
    use_cache(build_parser().parse_args(["run", "mlp", "--output-dir", str(tmp_path), "--shared-cache"]))
    assert cache.trust.shared() and os.environ["HELPERS_CACHE_SHARED"] == "1"
    assert "HELPERS_CACHE_SHARED" in ROW_ENV  # and a batch's rows on other machines are told so


@pytest.mark.parametrize(("umask", "folder", "file"), [(0o002, 0o775, 0o664), (0o022, 0o755, 0o644),
                                                        (0o077, 0o700, 0o600)])
def test_an_entry_gets_the_umasks_modes(umask, folder, file):
    def write(tmp):
        (tmp / "sub").mkdir()
        (tmp / "sub" / "last.pt").write_bytes(b"weights")

    old = os.umask(umask)
    try:
        entry = cache.store("runs", "ab" * 32, write, parts={}, made_by=cache.producer())
    finally:
        os.umask(old)
    modes = {p.relative_to(entry).as_posix(): p.stat().st_mode & 0o777 for p in [entry, *entry.rglob("*")]}
    assert modes == {".": folder, "sub": folder, "sub/last.pt": file, "meta.json": file}


@pytest.mark.parametrize("damage", ["not JSON", "truncated", "unreadable"])
def test_a_lookup_that_cannot_read_an_entry_computes(fake_data_dir, monkeypatch, damage):
    first, entry = data_entry(fake_data_dir)
    if damage == "not JSON":
        (entry / "meta.json").write_text('{"kind": "data", "key": ')
    elif damage == "truncated":
        data = (entry / "arrays.pt").read_bytes()
        (entry / "arrays.pt").unlink()
        (entry / "arrays.pt").write_bytes(data[: len(data) // 2])
    else:  # another user's 0700 folder, as umask 002 used to leave it (root reads anything, so it is faked)
        real = cache.trust.sha256_file

        def refused(path):
            if Path(path).parent == entry:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(cache.trust, "sha256_file", refused)
    again = reload(fake_data_dir, match="not JSON|does not match|PermissionError")
    assert again["cache"]["hit"] is False and torch.equal(again["test"].y, first["test"].y)


def test_no_name_id_folder_or_host_of_the_producer_reaches_another_report():
    secrets_of_mallory = ("Mallory", "M-666", "/home/mallory", socket.gethostname())
    entry = cache.store("runs", "cd" * 32, lambda tmp: (tmp / "last.pt").write_bytes(b"w"), parts={"what": "run"},
                        made_by=cache.producer(output_dir="/home/mallory/reports/mlp", author_name="Mallory",
                                               author_id="M-666", seconds=1.5))
    assert not any(s in (entry / "meta.json").read_text() for s in secrets_of_mallory)
    record = cache.hit_record(cache.lookup("runs", "cd" * 32))
    assert record["produced_by"]["seconds"] == 1.5 and record["produced_by"]["created"]  # provenance kept
    metrics = {"cache": metrics_file.cache_record({"runs": [{"name": "only", "repeat": 0, "seed": 0, "cache": record}]}),
               "data": {"cache": record}, "pretraining": {"resnet18": {"cache": record}}}
    shown = json.dumps(metrics) + json.dumps(report.cache_rows(metrics))
    assert "read from the cache (entry cdcdcdcd" in shown
    assert not any(s in shown for s in secrets_of_mallory), shown
    # a record or meta.json from before (or planted) that names its maker: nothing of it is shown
    old = {"hit": True, "key": "cd" * 8, "produced_by": {"author_name": "Mallory", "author_id": "M-666",
                                                         "output_dir": "/home/mallory/x", "host": "mallorys-pc"}}
    assert not any(s in cache.describe(old) for s in ("Mallory", "M-666", "/home/mallory", "mallorys-pc"))


# --- other hostile entries ------------------------------------------------------------------------------------

def test_a_symbolic_link_in_an_entrys_place_is_not_followed(fake_data_dir, tmp_path):
    first, entry = data_entry(fake_data_dir)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(entry, elsewhere)
    plant_zero_labels(elsewhere)
    meta = json.loads((elsewhere / "meta.json").read_text())  # with matching digests: only the link betrays it
    meta["digests"]["arrays.pt"] = hashlib.sha256((elsewhere / "arrays.pt").read_bytes()).hexdigest()
    (elsewhere / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(entry)
    entry.symlink_to(elsewhere, target_is_directory=True)
    again = reload(fake_data_dir, match="symbolic link")
    assert again["cache"]["hit"] is False and torch.equal(again["test"].y, first["test"].y)
    assert (elsewhere / "arrays.pt").is_file()  # the link was removed, never what it points to
    assert entry.is_dir() and not entry.is_symlink()  # and the real entry took its place


@pytest.mark.parametrize("plant", ["meta.json -> /etc/passwd", "FIFO arrays.pt", "extra file", "../ in digests"])
def test_links_fifos_and_extra_files_inside_an_entry_are_damage(fake_data_dir, plant):
    first, entry = data_entry(fake_data_dir)
    meta = json.loads((entry / "meta.json").read_text())
    if plant.startswith("meta.json"):
        (entry / "meta.json").unlink()
        (entry / "meta.json").symlink_to("/etc/passwd")
    elif plant.startswith("FIFO"):
        (entry / "arrays.pt").unlink()
        os.mkfifo(entry / "arrays.pt")  # a reader that opens it waits for a writer forever
    elif plant == "extra file":
        (entry / "sub").mkdir()
        (entry / "sub" / "last.pt").write_bytes(b"planted")  # copy_files takes every last.pt at any depth
    else:
        meta["digests"]["../../outside"] = meta["digests"]["arrays.pt"]
        (entry / "meta.json").write_text(json.dumps(meta))
    done = []
    reader = threading.Thread(target=lambda: done.append(load_fashion_mnist(fake_data_dir)), daemon=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader.start()
        reader.join(20)
    assert done, "the lookup blocked"
    assert done[0]["cache"]["hit"] is False and torch.equal(done[0]["test"].y, first["test"].y)
    assert any(str(entry) in str(w.message) for w in caught)


def test_an_entry_folder_replaced_by_a_file_is_replaced_by_the_entry(fake_data_dir):
    first, entry = data_entry(fake_data_dir)
    shutil.rmtree(entry)
    entry.write_text("not an entry")
    again = reload(fake_data_dir, match="not a folder")
    assert again["cache"]["hit"] is False and again["cache"]["stored"]
    assert load_fashion_mnist(fake_data_dir)["cache"]["hit"] is True


@pytest.mark.parametrize("meta", ["100 MB", "nested", "not UTF-8", "a list"])
def test_a_huge_or_strange_meta_json_is_not_parsed(fake_data_dir, meta):
    first, entry = data_entry(fake_data_dir)
    path = entry / "meta.json"
    if meta == "100 MB":
        path.unlink()
        with open(path, "wb") as f:
            f.truncate(100 << 20)  # sparse: 100 MB to a reader, nothing on the disk
    else:
        path.write_bytes({"nested": b"[" * 200_000, "not UTF-8": b'{"key": "\xff\xfe"}', "a list": b"[1, 2]"}[meta])
    start = time.perf_counter()
    again = reload(fake_data_dir, match="bytes, more than a real one|not JSON|not this entry's")
    assert again["cache"]["hit"] is False and torch.equal(again["test"].y, first["test"].y)
    assert time.perf_counter() - start < 10


def test_an_entry_moved_to_another_key_is_not_that_keys(fake_data_dir):
    first, entry = data_entry(fake_data_dir)
    other = cache.entry_path("data", "ef" * 32)
    other.parent.mkdir(parents=True)
    os.rename(entry, other)  # a whole, genuine entry: of another key
    with pytest.warns(UserWarning, match="not this entry's"):
        assert cache.lookup("data", "ef" * 32) is None


@pytest.mark.parametrize(("kind", "key"), [("runs", "../../../etc"), ("runs", ".." + "a" * 62),
                                           ("../runs", "ab" * 32), ("runs", "AB" * 32), ("runs", "ab" * 32 + "/x")])
def test_a_kind_or_key_that_leads_out_of_the_cache_is_refused(kind, key):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        cache.entry_path(kind, key)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        cache.lookup(kind, key)


def test_a_world_writable_shared_cache_trusts_no_other_user(fake_data_dir, monkeypatch, isolated_cache):
    first, entry = data_entry(fake_data_dir)
    os.chmod(isolated_cache, 0o1777)  # like /tmp: anyone may add an entry
    monkeypatch.setenv("HELPERS_CACHE_SHARED", "1")
    assert load_fashion_mnist(fake_data_dir)["cache"]["hit"] is True  # this user's own entry: still read
    another_user(monkeypatch, entry)
    again = reload(fake_data_dir, match="writable by every user")
    assert again["cache"]["hit"] is False and (entry / "meta.json").is_file()


def test_a_hard_link_to_another_users_file_is_not_read(fake_data_dir, monkeypatch, tmp_path):
    first, entry = data_entry(fake_data_dir)
    theirs = tmp_path / "theirs.pt"
    shutil.copy(entry / "arrays.pt", theirs)  # the same bytes, so the digest matches: only the owner differs
    (entry / "arrays.pt").unlink()
    os.link(theirs, entry / "arrays.pt")
    another_user(monkeypatch, theirs)
    again = reload(fake_data_dir, match="made by another user")
    assert again["cache"]["hit"] is False


# --- Dask: addresses given by the user --------------------------------------------------------------------------

def batch_on(scheduler: str | None, folder: Path):
    """:func:`helpers.cli.executors.run_dask` of one row, as ``--executor dask --scheduler SCHEDULER`` runs it."""
    import dask

    from helpers.cli.executors import run_dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        return run_dask([{"name": "Ada", "line": 2, "sections": ["mlp"], "params": {}}], output_dir=folder, jobs=1,
                        scheduler=scheduler, options={"retries": 0})


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:8786", "tls://[::]:8786", "tcp://:8786", "0.0.0.0:8786"])
def test_a_wildcard_scheduler_address_is_refused_before_anything_starts(address, monkeypatch, tmp_path):
    pytest.importorskip("distributed")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)  # from the environment as from --scheduler
    with pytest.raises(SystemExit, match="listen on every interface"):
        batch_on(None, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tls_without_a_certificate_and_plain_tcp_elsewhere_are_named(monkeypatch, tmp_path, capsys):
    pytest.importorskip("distributed")
    import dask

    for var in [v for v in os.environ if v.startswith("DASK_DISTRIBUTED__COMM__TLS")]:
        monkeypatch.delenv(var)
    with dask.config.set({"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": None}):
        with pytest.raises(SystemExit, match="no certificate is configured.*DASK_DISTRIBUTED__COMM__TLS__CA_FILE"):
            batch_on("tls://127.0.0.1:9", tmp_path)
    # 198.51.100.1 (TEST-NET-2) is no scheduler (nothing, or a proxy's bytes): the warning comes first, then the
    # address is named as unreachable
    with pytest.raises(SystemExit, match="cannot reach the Dask scheduler at tcp://198.51.100.1:8786"):
        batch_on("tcp://198.51.100.1:8786", tmp_path)
    err = capsys.readouterr().err
    assert "tcp://198.51.100.1:8786 is plain tcp://, neither encrypted nor authenticated" in err and "tls://" in err
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SystemExit, match="cannot reach"):
        batch_on(f"tcp://127.0.0.1:{port}", tmp_path)
    assert "neither encrypted" not in capsys.readouterr().err  # this machine's own scheduler: no warning


def test_a_server_that_is_no_scheduler_is_named_not_a_traceback(tmp_path):
    """Something else on the port (a web server, a proxy): its bytes read as a frame length of exabytes."""
    pytest.importorskip("distributed")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer():
        with server:
            for _ in range(20):  # Dask tries again until its connect timeout
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"\xff" * 64)

    threading.Thread(target=answer, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(SystemExit, match=f"cannot reach the Dask scheduler at {address}"):
        batch_on(address, tmp_path)
    server.close()


def no_cryptography(cls):
    raise ImportError("Using `Security.temporary` requires `cryptography`")


def test_a_local_clusters_certificate_lives_only_as_long_as_the_cluster(monkeypatch, capsys):
    pytest.importorskip("distributed")
    from distributed.security import Security

    from helpers.cli import dask_security

    if shutil.which("openssl") is not None:
        monkeypatch.setattr(Security, "temporary", classmethod(no_cryptography))
        with dask_security.local_security() as security:
            files = [Path(security.tls_ca_file), Path(security.tls_client_key)]
            assert security.require_encryption and all(f.is_file() for f in files)
            assert files[1].parent.stat().st_mode & 0o077 == 0  # the key's folder: this user's only
        assert not any(f.exists() for f in files)
    monkeypatch.setattr(dask_security.shutil, "which", lambda name: None)  # neither openssl nor cryptography
    monkeypatch.setattr(Security, "temporary", classmethod(no_cryptography))
    with dask_security.local_security() as security:
        assert security is None
    assert "plain tcp:// on 127.0.0.1" in capsys.readouterr().err  # said, not silent


@pytest.fixture()
def tls_scheduler(tmp_path):
    """The README's TLS commands: a certificate made with openssl, ``dask scheduler`` and one ``dask worker``."""
    pytest.importorskip("distributed")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    from helpers.cli.dask_security import _files_security

    certs = {}
    for who in ("instructor", "stranger"):
        (tmp_path / who).mkdir()
        sec = _files_security(tmp_path / who)
        certs[who] = {"ca": sec.tls_ca_file, "cert": sec.tls_client_cert, "key": sec.tls_client_key}
    c = certs["instructor"]
    tls = ["--tls-ca-file", c["ca"], "--tls-cert", c["cert"], "--tls-key", c["key"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host",
                               "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file),
                               *tls], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if scheduler_file.exists() and scheduler_file.read_text().strip():
                break
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                       "--no-dashboard", "--no-nanny", *tls], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, cwd=tmp_path))
        yield address, certs
    finally:
        stop_processes(procs)


def use_certificate(monkeypatch, cert: dict) -> None:
    """Dask's TLS settings as the README gives them, by environment variable."""
    import dask

    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", cert["ca"])
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", cert["cert"])
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", cert["key"])
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "3s")
    dask.config.refresh()


def test_a_tls_scheduler_is_used_with_dasks_settings_and_refuses_strangers(tls_scheduler, monkeypatch):
    import dask

    from helpers.cli.dask_security import check_scheduler
    from helpers.cli.executors import connect

    address, certs = tls_scheduler
    assert address.startswith("tls://127.0.0.1:")
    try:
        use_certificate(monkeypatch, certs["instructor"])
        with connect(None, check_scheduler(address)) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(os.getpid, pure=False).result(timeout=60) != os.getpid()
            assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])
        use_certificate(monkeypatch, certs["stranger"])  # a certificate the scheduler's CA did not sign
        with pytest.raises(SystemExit, match=f"cannot reach the Dask scheduler at {address}"):
            connect(None, address)
        with pytest.raises(SystemExit, match="cannot reach"):  # and plain tcp to the same port
            connect(None, address.replace("tls://", "tcp://"))
    finally:
        monkeypatch.undo()
        dask.config.refresh()
