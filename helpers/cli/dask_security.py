"""Who can reach the Dask clusters a batch uses (:mod:`helpers.cli.executors`).

A Dask scheduler runs whatever its clients submit, as the user running its workers, and plain ``tcp://`` asks no
one for credentials: a cluster listening on every interface is a way for anyone on the network to run code as
the instructor. So:

- a cluster the toolkit starts (``--executor dask`` without ``--scheduler``) listens on 127.0.0.1 only, every
  part of it (scheduler, nannies, workers, their HTTP servers), and speaks TLS with a throwaway certificate made
  for it (by ``cryptography`` or the ``openssl`` command), so that other users of the same machine cannot use
  it either; only where neither is at hand is it plain ``tcp://`` on 127.0.0.1, with a note saying so;
- a scheduler given by ``--scheduler`` (or ``DASK_SCHEDULER_ADDRESS``) is connected to with Dask's own TLS
  configuration (``distributed.comm.tls.*``: ``~/.config/dask/*.yaml`` or ``DASK_DISTRIBUTED__COMM__TLS__...``
  variables; README, "A whole class"); ``tls://`` without a certificate is refused by name, a wildcard host
  (``0.0.0.0``, ``::``: a listening address, not one to connect to) too, and plain ``tcp://`` to another machine
  gets a warning.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8786
TLS_SETTINGS = ("DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (or distributed.comm.tls.* in ~/.config/dask/)")


def listen(port: int = 0) -> str:
    """The address a server of a local cluster listens on: the loopback interface, ``port`` (0: any free one)."""
    return f"{LOOPBACK}:{port}"


def _files_security(folder: Path):
    """A Security of one self-signed certificate (its own CA) made with the ``openssl`` command, or None."""
    # lazy on purpose: distributed takes seconds to import, and only --executor dask needs it
    from distributed.security import Security

    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:  # an elliptic-curve key: made in milliseconds
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=helpers-local-dask", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    files = {"tls_ca_file": str(cert), "tls_client_cert": str(cert), "tls_client_key": str(key)}
    for role in ("scheduler", "worker"):
        files.update({f"tls_{role}_cert": str(cert), f"tls_{role}_key": str(key)})
    return Security(**files, require_encryption=True)


@contextmanager
def local_security(*, quiet: bool = False):
    """The TLS settings of a local cluster, with a certificate that exists only while the block runs and that
    only this user can read (its folder is 0700); None (plain ``tcp://`` on 127.0.0.1) where none can be made."""
    # lazy on purpose: distributed takes seconds to import, and only --executor dask needs it
    from distributed.security import Security

    try:
        security = Security.temporary()  # in memory: needs the cryptography package
    except ImportError:
        security = None
    folder = None
    try:
        if security is None:
            folder = Path(tempfile.mkdtemp(prefix="helpers-dask-tls-"))
            security = _files_security(folder)
        if security is None and not quiet:
            print("note: the local Dask cluster uses plain tcp:// on 127.0.0.1 (no openssl command or cryptography "
                  "package to make a certificate): other users of this machine could submit work to it",
                  file=sys.stderr)
        yield security
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def check_scheduler(address: str, *, warn=None) -> str:
    """``address`` when it is one to connect to, else a SystemExit saying why and what to give instead.

    A wildcard host is refused (the toolkit never starts a scheduler at a given address: without ``--scheduler``
    it starts one on 127.0.0.1 itself); ``tls://`` needs Dask's TLS settings; plain ``tcp://`` to another host
    is allowed with a warning (``warn``: where it goes, default standard error)."""
    # lazy on purpose: distributed takes seconds to import, and only --executor dask needs it
    from distributed.comm import parse_address, parse_host_port
    from distributed.security import Security

    try:
        scheme, location = parse_address(address)
        host = "" if scheme == "inproc" else parse_host_port(location, DEFAULT_PORT)[0]
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"error: --scheduler {address!r} is not a Dask address ({exc}); e.g. "
                         "tls://10.0.0.5:8786") from None
    if scheme != "inproc" and host.strip("[]") in WILDCARD_HOSTS:
        raise SystemExit(f"error: --scheduler {address}: {host or 'an empty host'} means 'listen on every "
                         "interface', not a scheduler to connect to; give the scheduler machine's name or address "
                         "(e.g. tls://10.0.0.5:8786), or leave out --scheduler for a local cluster (which listens "
                         "on 127.0.0.1 only)")
    if scheme == "tls" and Security().get_connection_args("client")["ssl_context"] is None:
        raise SystemExit(f"error: --scheduler {address} is TLS, but no certificate is configured for the client: "
                         f"set {TLS_SETTINGS} (see the README, 'A whole class')")
    if scheme == "tcp" and host not in LOOPBACK_HOSTS:
        print(f"warning: {address} is plain tcp://, neither encrypted nor authenticated: whoever can reach it can "
              "run code as its workers' user; use a tls:// scheduler (see the README, 'A whole class')",
              file=warn or sys.stderr)
    return address
