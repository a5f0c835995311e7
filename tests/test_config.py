"""Parameter validation: every bad value names the parameter, the value and what is allowed."""

from __future__ import annotations

import nbformat
import pytest

from helpers.cli.runner import notebook_path
from helpers.engine.config import Config, ConfigError, augment_from
from helpers.sections import make_config, parameter_choices


def notebook_namespace(section: str) -> dict:
    """The names the notebook's parameters cell defines, as ``globals()`` holds them when it calls make_config."""
    nb = nbformat.read(str(notebook_path(section)), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return namespace


NAMESPACE = notebook_namespace("mlp")
MLP = {**{k: v for k, v in NAMESPACE.items() if not k.startswith("__")}, "profile": "smoke", "author_name": "A",
       "author_id": "1", "course": "DL"}


def test_profile_fills_only_missing_values():
    cfg = make_config("mlp", NAMESPACE, profile="full")
    assert cfg.epochs == 30 and cfg.train_per_class is None and cfg.author_name == NAMESPACE["author_name"]
    cfg = make_config("mlp", **{**MLP, "profile": "full", "epochs": 3})
    assert cfg.epochs == 3
    assert make_config("mlp", **MLP).epochs == 2
    assert cfg.output_dir.endswith("reports/mlp")


def test_numeric_student_id_is_kept_as_text():
    """`-p author_id 42` reaches the notebook as an int; a student number must not stop the report."""
    cfg = make_config("mlp", **{**MLP, "author_id": 42})
    assert cfg.author_id == "42"


def test_config_is_read_only():
    cfg = make_config("mlp", **MLP)
    assert isinstance(cfg, Config) and cfg["lr"] is None and cfg["schedule"] == "onecycle"
    with pytest.raises(AttributeError):
        cfg.lr = 1.0


@pytest.mark.parametrize("name, value, fragment", [
    ("optimizers", ["adam", "adagrad"], "'sgd', 'adam', 'adamw', 'rmsprop'"),
    ("optimizers", "adam", "a list"),
    ("optimizers", ["adam", "adam"], "at most once"),
    ("regularizers", [], "grid would be empty"),
    ("regularizers", ["weight_decay"], "'none', 'batch_norm', 'dropout', 'l1'"),
    ("activation", "swish", "'relu', 'tanh'"),
    ("profile", "fast", "'smoke', 'quick', 'full'"),
    ("epochs", 0, "positive integer"),
    ("epochs", 2.5, "positive integer"),
    ("batch_size", -1, "positive integer"),
    ("lr", 0, "positive number"),
    ("lr", "fast", "positive number"),
    ("val_fraction", 0, "(0, 1)"),
    ("val_fraction", 1, "(0, 1)"),
    ("dropout", 1.2, "[0, 1)"),
    ("classes", [1, 3, 3], "repeated"),
    ("classes", [1, 10], "0..9"),
    ("classes", [4], "at least 2"),
    ("hidden_sizes", [256, 0], "positive integers"),
    ("device", "tpu", "'auto', 'cpu', 'cuda', 'mps'"),
    ("seed", -1, "integer >= 0"),
    ("stratified", "yes", "True or False"),
    ("author_id", ["s1"], "a string"),
    ("author_name", True, "a string"),
])
def test_bad_values_name_parameter_and_allowed(name, value, fragment):
    with pytest.raises(ConfigError) as info:
        make_config("mlp", **{**MLP, name: value})
    message = str(info.value)
    assert name in message and fragment in message and "allowed" in message


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown section 'gan'; allowed: ") as info:
        make_config("gan", **MLP)
    assert {"mlp", "cnn"} <= set(str(info.value).split("allowed: ")[1].split(" (")[0].split(", "))


def test_the_notebook_namespace_supplies_every_parameter():
    cfg = make_config("mlp", {**NAMESPACE, "lr": 0.5}, profile="smoke")
    assert cfg.lr == 0.5 and cfg.epochs == 2 and cfg.section == "mlp"  # keywords win over the namespace
    partial = {k: v for k, v in NAMESPACE.items() if k not in ("grid", "repeats")}
    with pytest.raises(ConfigError, match="parameters grid, repeats are missing; the mlp notebook's parameters cell"):
        make_config("mlp", partial)


def test_default_grid_is_optimizers_by_regularizers():
    cfg = make_config("mlp", **{**MLP, "optimizers": ["sgd", "adam"], "regularizers": ["none", "l1"]})
    assert cfg.grid == {"optimizer": ["sgd", "adam"], "regularizer": ["none", "l1"]}
    assert [c["name"] for c in cfg.grid_configs] == ["sgd + none", "sgd + l1", "adam + none", "adam + l1"]
    assert cfg.grid_configs[1] == {"name": "sgd + l1", "optimizer": "sgd", "regularizer": "l1"}


def test_a_grid_replaces_the_default_one():
    cfg = make_config("mlp", **{**MLP, "grid": {"hidden_sizes": [[16], [16, 8]], "activation": ["relu", "tanh"]},
                                "optimizers": ["not", "checked"]})
    assert [(c["hidden_sizes"], c["activation"]) for c in cfg.grid_configs] == [
        ([16], "relu"), ([16], "tanh"), ([16, 8], "relu"), ([16, 8], "tanh")]
    explicit = make_config("mlp", **{**MLP, "grid": [{"name": "deep", "hidden_sizes": [64, 64, 64]},
                                                     {"init": {"linear": "normal"}, "lr": 0.01}]})
    assert explicit.grid_configs == [{"name": "deep", "hidden_sizes": [64, 64, 64]},
                                     {"name": "init linear normal + lr 0.01", "init": {"linear": "normal"}, "lr": 0.01}]


@pytest.mark.parametrize("key", ["classes", "data_dir", "profile", "seed", "val_fraction"])
def test_a_grid_cannot_vary_a_fixed_parameter(key):
    with pytest.raises(ConfigError) as info:
        make_config("mlp", **{**MLP, "grid": {key: [[1, 2]]}})
    assert f"{key!r} cannot vary between runs" in str(info.value)


@pytest.mark.parametrize("grid, fragment", [
    ({"lr": [0.01, -1]}, "grid configuration 2 (lr -1): parameter lr=-1 is not allowed; allowed: a positive number"),
    ({"optimizer": ["adam", "adagrad"]}, "grid configuration 2 (adagrad): parameter optimizer='adagrad'"),
    ({"hidden_sizes": [[16], [0]]}, "grid configuration 2 (hidden_sizes 0): parameter hidden_sizes=[0]"),
    ({"init": [{"rnn": "he"}]}, "grid configuration 1 (init rnn he): parameter init layer type='rnn': unknown; "
                                "allowed: linear, conv"),
    ({"patch_size": [4, 5]}, "grid configuration 2 (patch_size 5): parameter patch_size=5 is not allowed; allowed: "
                             "None or a divisor of 28"),
    ({"regularizer": ["dropout"], "dropout": [0.0]}, "grid configuration 1 (dropout + dropout 0): parameter "
                                                     "dropout=0 is not allowed with regularizer 'dropout'"),
    ({"colour": ["red"]}, "'colour' is not a parameter of a run; allowed: hidden_sizes, activation, optimizer"),
    ({"lr": 0.1}, "'lr' needs a non-empty list of values"),
    ({}, "parameter grid={}: empty"),
    ([{"lr": 0.1}, {"lr": 0.1}], "'lr 0.1' appear more than once"),
])
def test_a_bad_grid_names_the_configuration_and_parameter(grid, fragment):
    with pytest.raises(ConfigError) as info:
        make_config("mlp", **{**MLP, "grid": grid})
    assert fragment in str(info.value)


def test_the_base_parameters_are_checked_even_when_a_grid_sets_them():
    with pytest.raises(ConfigError, match="parameter lr=-1 is not allowed"):
        make_config("mlp", **{**MLP, "lr": -1, "grid": {"lr": [0.1]}})


@pytest.mark.parametrize("name, value, fragment", [
    ("repeats", 0, "a positive integer"),
    ("repeats", 1.5, "a positive integer"),
    ("evaluate_test", "some", "'best', 'all'"),
    ("init", {"linear": "glorot"}, "init['linear']='glorot'"),
    ("momentum", 1.5, "[0, 1)"),
    ("weight_decay", -1, ">= 0"),
    ("patch_size", 3, "divisor of 28"),
    ("patch_features", 0, "a positive integer"),
])
def test_new_parameters_are_checked(name, value, fragment):
    with pytest.raises(ConfigError) as info:
        make_config("mlp", **{**MLP, "patch_size": 4, name: value})
    assert fragment in str(info.value) and "allowed" in str(info.value)


def test_augment_from_parameters():
    aug = augment_from({"aug_rotation": 10, "aug_noise_std": 0.05, "aug_hflip": True})
    assert aug.rotation == 10 and aug.hflip and aug.active
    with pytest.raises(ConfigError, match="aug_noise_std"):
        augment_from({"aug_noise_std": -1})


@pytest.mark.parametrize("section", ["mlp", "cnn", "transfer", "autoencoder"])
def test_the_words_a_section_registers_are_the_values_its_checks_allow(section):
    """Each parameter's registered words (which keep ``schedule none`` the word on a command line or in a
    spreadsheet) are each accepted by make_config, and a word outside them is refused naming the parameter."""
    namespace = {**notebook_namespace(section), "profile": "smoke"}
    words = parameter_choices(section)
    assert words and set(words) <= set(namespace)
    for name, allowed in words.items():
        for word in allowed:
            assert make_config(section, {**namespace, name: word})[name] == word
        with pytest.raises(ConfigError, match=f"{name}"):
            make_config(section, {**namespace, name: "sometimes"})
