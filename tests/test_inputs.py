"""Values on their way in (``-p``, ``-f`` files, batch CSV and YAML cells) keep what the student meant:
identifiers stay text, mappings are mappings, and impossible requests are refused before anything trains."""

from __future__ import annotations

import argparse

import pytest
import torch

from helpers.cli.batch import read_batch
from helpers.cli.main import collect_parameters, typed_parameter
from helpers.cli.runner import SECTIONS, notebook_parameters
from helpers.engine.config import ConfigError
from helpers.sections import make_config

DECLARED = {k: v for s in SECTIONS for k, v in notebook_parameters(s).items()}


@pytest.mark.parametrize("name, text, expected", [
    ("author_id", "0042", "0042"), ("author_id", "0123", "0123"), ("author_name", "yes", "yes"),
    ("author_id", "42", "42"), ("course", "1e-3", "1e-3"),
    ("lr", "1e-3", 0.001), ("seed", "3", 3), ("classes", "[1, 3]", [1, 3]), ("stratified", "False", False),
    ("grid", "{optimizer: [adam, sgd]}", {"optimizer": ["adam", "sgd"]}), ("classes", "None", None),
    ("init", "{linear: normal, conv: he}", {"linear": "normal", "conv": "he"}), ("init", "xavier", "xavier"),
    # one section's parameter, as a students.csv column or an assignment key names it: typed as that parameter
    ("mlp.schedule", "none", "none"), ("cnn.pool", "none", "none"), ("mlp.epochs", "none", None),
    ("mlp.lr", "1e-3", 0.001), ("mlp.author_id", "0042", "0042"),
])
def test_each_value_is_typed_by_the_parameter_it_fills(name, text, expected):
    assert typed_parameter(name, text, DECLARED) == expected


def test_batch_csv_keeps_identifiers_and_reads_dict_cells(tmp_path):
    batch = tmp_path / "class.csv"
    batch.write_text("name,author_id,author_name,grid,lr,classes\n"
                     'yes,0123,no,"{optimizer: [adam, sgd]}",0.01,\n')
    [(line, row)] = read_batch(batch, DECLARED)
    assert line == 2
    assert row == {"name": "yes", "author_id": "0123", "author_name": "no",
                   "grid": {"optimizer": ["adam", "sgd"]}, "lr": 0.01}  # the empty classes cell: left at its default


def test_batch_yaml_keeps_identifiers(tmp_path):
    batch = tmp_path / "class.yaml"
    batch.write_text("- {name: Ada, author_id: 0123, author_name: yes, grid: {activation: [relu, tanh]}}\n"
                     "- {name: Bob, author_id: '0042', lr: 1e-3}\n- not a mapping\n")
    rows = read_batch(batch, DECLARED)
    assert rows[0] == (1, {"name": "Ada", "author_id": "0123", "author_name": "yes",
                           "grid": {"activation": ["relu", "tanh"]}})
    assert rows[1] == (2, {"name": "Bob", "author_id": "0042", "lr": 0.001})
    assert rows[2] == (3, {"__invalid__": "not a mapping"})


def _args(tmp_path, *, parameter=(), file_text=None, profile=None):
    path = None
    if file_text is not None:
        path = tmp_path / "params.yaml"
        path.write_text(file_text)
    return argparse.Namespace(parameters_file=path, parameter=[list(p) for p in parameter], profile=profile)


def test_command_line_and_file_keep_identifiers(tmp_path):
    params = collect_parameters(_args(tmp_path, parameter=[("author_id", "0042")],
                                      file_text="author_name: Grace Hopper\nauthor_id: 0123\nrepeats: 2\n"), DECLARED)
    assert params == {"author_name": "Grace Hopper", "author_id": "0042", "repeats": 2}


def test_profile_given_twice_differently_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--profile smoke.*profile='full'"):
        collect_parameters(_args(tmp_path, parameter=[("profile", "full")], profile="smoke"), DECLARED)
    same = collect_parameters(_args(tmp_path, parameter=[("profile", "smoke")], profile="smoke"), DECLARED)
    assert same["profile"] == "smoke"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_training():
    from tests.test_config import MLP

    with pytest.raises(ConfigError, match="device='cuda'.*'auto' or a device this machine has: 'cpu'"):
        make_config("mlp", **{**MLP, "device": "cuda"})
