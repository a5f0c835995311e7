"""Kernels started for a report talk over Unix sockets in a private folder (no TCP port on the machine), and
several at once do not collide."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from helpers.cli.kernels import execute

pytestmark = pytest.mark.skipif(os.name != "posix", reason="IPC transport needs Unix sockets")


def connection_of(tmp_path, name: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from ipykernel import get_connection_info\nprint(get_connection_info())")]
    src, out = tmp_path / f"{name}.ipynb", tmp_path / f"{name}-out.ipynb"
    nbformat.write(nb, str(src))
    execute(src, out, parameters={"x": 2}, cwd=tmp_path)
    text = nbformat.read(str(out), as_version=4).cells[-1].outputs[0]["text"]
    return json.loads(text)


def test_the_kernel_uses_ipc_in_a_private_folder(tmp_path):
    info = connection_of(tmp_path, "one")
    assert info["transport"] == "ipc"
    folder = os.path.dirname(info["ip"])
    assert os.path.basename(folder).startswith("fashion-kernel-")
    assert not os.path.exists(folder)  # removed once the notebook is done


def test_kernels_started_together_do_not_collide(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:
        infos = list(pool.map(lambda n: connection_of(tmp_path, n), ["a", "b"]))
    assert infos[0]["ip"] != infos[1]["ip"] and all(i["transport"] == "ipc" for i in infos)
