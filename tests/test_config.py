"""Parameter validation: every bad value names the parameter, the value and what is allowed."""

from __future__ import annotations

import pytest

from helpers.config import Config, ConfigError, augment_from, make_config

MLP = dict(profile="smoke", seed=0, data_dir=None, output_dir=None, optimizers=["adam", "rmsprop"],
           regularizers=["none", "batch_norm", "dropout", "l1"], hidden_sizes=[256, 128, 64], activation="tanh",
           epochs=None, batch_size=64, lr=0.001, dropout=0.2, l1_weight=1e-5, schedule="none", val_fraction=0.15,
           stratified=True, classes=None, train_per_class=None, test_per_class=None, device="auto",
           author_name="A", author_id="1", course="DL")


def test_profile_fills_only_missing_values():
    cfg = make_config("mlp", **{**MLP, "profile": "full"})
    assert cfg.epochs == 30 and cfg.train_per_class is None
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
    assert isinstance(cfg, Config) and cfg["lr"] == 0.001
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
    ("dropout", 1.2, "(0, 1)"),
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
    with pytest.raises(ConfigError, match="allowed: mlp, cnn, transfer, autoencoder"):
        make_config("gan", **MLP)


def test_augment_from_parameters():
    aug = augment_from({"aug_rotation": 10, "aug_noise_std": 0.05, "aug_hflip": True})
    assert aug.rotation == 10 and aug.hflip and aug.active
    with pytest.raises(ConfigError, match="aug_noise_std"):
        augment_from({"aug_noise_std": -1})
