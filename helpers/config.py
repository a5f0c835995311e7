"""Notebook parameters: profiles and validation into a frozen configuration.

A notebook's ``parameters`` cell holds plain literals; the next cell calls :func:`make_config`, which
fills the values left as ``None`` from the chosen profile and rejects bad values before anything
trains, naming the parameter, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from .augment import Augment
from .data import check_classes
from .training import DEVICES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILE_NAMES = ("smoke", "quick", "full")

# Each section's module (helpers.mlp, helpers.cnn, ...) defines PROFILES, what each profile sets when the
# notebook leaves a parameter as None, and validate(params), its own checks.
SECTIONS = {"mlp": "helpers.mlp", "cnn": "helpers.cnn", "transfer": "helpers.transfer",
            "autoencoder": "helpers.autoencoder"}


def section_module(section: str):
    import importlib

    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; allowed: {', '.join(SECTIONS)}")
    return importlib.import_module(SECTIONS[section])


class ConfigError(ValueError):
    """A notebook parameter with a value that is not allowed."""


class Config(Mapping):
    """Read-only parameters with attribute access (``cfg.epochs``)."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; change the parameters cell instead")

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def fail(name: str, value, allowed: str):
    raise ConfigError(f"parameter {name}={value!r} is not allowed; allowed: {allowed}")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        fail(name, value, ", ".join(repr(a) for a in allowed))


def check_choices(name: str, values, allowed) -> list:
    """A non-empty list of distinct allowed values."""
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        fail(name, values, f"a list drawn from {', '.join(map(repr, allowed))}")
    values = list(values)
    if not values:
        fail(name, values, f"a non-empty list drawn from {', '.join(map(repr, allowed))} (the grid would be empty)")
    for v in values:
        if v not in allowed:
            raise ConfigError(f"parameter {name}={values!r}: {v!r} is not allowed; allowed: "
                              + ", ".join(repr(a) for a in allowed))
    if len(set(values)) != len(values):
        fail(name, values, "each value at most once")
    return values


def check_positive(name: str, value, *, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not value > 0:
        fail(name, value, "a positive integer" if integer else "a positive number")


def check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        fail(name, value, "a number >= 0")


def check_fraction(name: str, value, *, low_open: bool = True, high_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        fail(name, value, f"a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        fail(name, value, "True or False")


def check_sizes(name: str, value, *, allow_empty: bool = False) -> list[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        fail(name, value, "a list of positive integers, e.g. [256, 128, 64]")
    value = list(value)
    if (not value and not allow_empty) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        fail(name, value, "a list of positive integers, e.g. [256, 128, 64]")
    return value


def check_classes_param(value) -> list[int] | None:
    try:
        return check_classes(value)
    except ValueError as exc:
        raise ConfigError(f"parameter {exc}") from None


def apply_profile(section: str, params: dict) -> dict:
    """Fill parameters left as None from the profile's values."""
    check_choice("profile", params.get("profile"), PROFILE_NAMES)
    defaults = section_module(section).PROFILES[params["profile"]]
    return {**params, **{k: v for k, v in defaults.items() if params.get(k) is None}}


def common_checks(p: dict) -> dict:
    """Checks shared by every section; returns the normalised values."""
    seed = p.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        fail("seed", seed, "an integer >= 0")
    check_choice("device", p.get("device", "auto"), DEVICES)
    for key in ("epochs", "batch_size"):
        if key in p:
            check_positive(key, p[key], integer=True)
    if "lr" in p:
        check_positive("lr", p["lr"])
    if "val_fraction" in p:
        check_fraction("val_fraction", p["val_fraction"])
    if "stratified" in p:
        check_bool("stratified", p["stratified"])
    for key in ("train_per_class", "test_per_class"):
        if p.get(key) is not None:
            check_positive(key, p[key], integer=True)
    if "classes" in p:
        p["classes"] = check_classes_param(p["classes"])
    for key in ("author_name", "author_id", "course"):
        # `-p author_id 42` arrives as an int (papermill's typing): a student number is still an id
        if key in p and isinstance(p[key], int) and not isinstance(p[key], bool):
            p[key] = str(p[key])
        if key in p and not isinstance(p[key], str):
            fail(key, p[key], "a string (or a whole number)")
    return p


def resolve_output_dir(output_dir, section: str) -> str:
    return str(Path(output_dir).resolve()) if output_dir else str(PROJECT_ROOT / "reports" / section)


def make_config(section: str, **params) -> Config:
    """Validate a notebook's parameters for ``section`` and return a frozen :class:`Config`."""
    module = section_module(section)
    p = common_checks(apply_profile(section, params))
    module.validate(p)
    p["section"] = section
    p["output_dir"] = resolve_output_dir(p.get("output_dir"), section)
    return Config(p)


def augment_from(p: dict) -> Augment:
    """An :class:`Augment` from ``aug_*`` parameters (errors name the parameter)."""
    fields = ("rotation", "noise_std", "hflip", "brightness", "contrast", "crop_padding", "erasing")
    try:
        return Augment(**{f: p[f"aug_{f}"] for f in fields if f"aug_{f}" in p})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"parameter aug_{str(exc).removeprefix('augment ')}") from None
