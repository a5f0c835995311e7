"""Notebook parameters: profiles and validation into a frozen configuration.

A notebook's ``parameters`` cell holds plain literals; the next cell calls
:func:`helpers.sections.make_config`, which finds the section's :class:`Section` and calls :func:`build_config`
here: it fills the values left as ``None`` from the chosen profile and rejects bad values before anything
trains, naming the parameter, the value and what is allowed. This module knows no section by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from helpers.data.augment import Augment
from helpers.data.fashion import check_classes
from helpers.engine.grid import GridError, expand_grid
from helpers.engine.optim import OPTIMIZERS, SCHEDULES
from helpers.engine.training import DEVICES
from helpers.models.networks import check_init
from helpers.paths import PROJECT_ROOT

PROFILE_NAMES = ("smoke", "quick", "full")
# The smoke profile runs every cell in seconds whatever a parameters file asks: epoch counts are capped.
SMOKE_MAX_EPOCHS = 2


def smoke_cap(values: dict, epoch_keys) -> dict:
    """``values`` with every epoch count named in ``epoch_keys`` (a section's :attr:`Section.epoch_keys`) at most
    :data:`SMOKE_MAX_EPOCHS`; a list of counts (the autoencoder's ``epoch_options``) capped the same way."""
    out = dict(values)
    for key in epoch_keys:
        if isinstance(out.get(key), int) and not isinstance(out[key], bool):
            out[key] = min(out[key], SMOKE_MAX_EPOCHS)
        elif isinstance(out.get(key), list):
            out[key] = sorted({min(e, SMOKE_MAX_EPOCHS) if isinstance(e, int) else e for e in out[key]})
    return out


@dataclass(frozen=True)
class Section:
    """What :func:`build_config` needs to know of a report section; each section module declares its own, and
    :mod:`helpers.sections` lists them.

    ``parameters`` are the names of the notebook's ``parameters`` cell; ``profiles`` what each profile sets for
    parameters left as None; ``choices`` the words a parameter takes (beside :data:`COMMON_CHOICES`), so that a
    command line or a spreadsheet cell ``none`` stays the word where it is one of them; ``validate(p)`` the
    report-level checks (it may fill a grid's default from its shorthands); ``check_run(settings)`` the checks of
    one training run's settings, applied to the base parameters and to every configuration of each grid in
    ``grids``; ``run_parameters`` what a grid may vary; ``fixed`` the section's own parameters that shape the
    whole report, which no grid may vary (beside :data:`helpers.engine.grid.FIXED` and the grids themselves);
    ``epoch_keys`` its epoch counts, which the smoke profile caps (:func:`smoke_cap`); ``volatile`` the keys of
    its ``metrics.json`` that differ between two identical runs (beside :data:`helpers.reporting.fingerprint.VOLATILE`),
    which its fingerprint leaves out.
    """

    name: str
    parameters: tuple
    profiles: dict
    validate: Callable[[dict], None]
    check_run: Callable[[dict], None]
    run_parameters: tuple
    grids: tuple = ("grid",)
    stages: dict | None = None  # grid -> {run setting: report parameter it comes from}, e.g. epochs <- grid_epochs
    choices: dict = field(default_factory=dict)  # parameter -> the words it takes, e.g. pool: ("max", "avg", "none")
    fixed: tuple = ()  # e.g. the transfer section's dataset and color
    epoch_keys: tuple = ("epochs",)  # e.g. the CNN's grid_epochs, search_epochs, final_epochs
    volatile: tuple = ()  # e.g. the autoencoder's ae_seconds


# words the checks of this module allow, for every section that declares the parameter
COMMON_CHOICES = {"profile": PROFILE_NAMES, "evaluate_test": ("best", "all"), "optimizer": OPTIMIZERS,
                  "schedule": SCHEDULES}


def section_choices(sec: Section) -> dict[str, tuple]:
    """The words each parameter of section ``sec`` takes: :data:`COMMON_CHOICES` it declares, and its own."""
    return {**{k: v for k, v in COMMON_CHOICES.items() if k in sec.parameters}, **sec.choices}


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


def apply_profile(sec: Section, params: dict) -> dict:
    """Fill parameters left as None from the profile's values of section ``sec``."""
    check_choice("profile", params.get("profile"), PROFILE_NAMES)
    defaults = sec.profiles[params["profile"]]
    return {**params, **{k: v for k, v in defaults.items() if params.get(k) is None}}


def available_devices() -> list[str]:
    """The devices torch can use on this machine: always ``cpu``, then ``cuda`` and ``mps`` where present."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if mps and mps.is_available() else [])


def common_checks(p: dict) -> dict:
    """Checks shared by every section; returns the normalised values."""
    seed = p.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        fail("seed", seed, "an integer >= 0")
    check_choice("device", p.get("device", "auto"), DEVICES)
    here = available_devices()
    if p.get("device", "auto") not in ("auto", *here):
        # refused here rather than as a driver error in the middle of training
        fail("device", p["device"], f"'auto' or a device this machine has: {', '.join(map(repr, here))}")
    if p.get("checkpoint_every"):
        check_positive("checkpoint_every", p["checkpoint_every"], integer=True)
    if "repeats" in p:
        check_positive("repeats", p["repeats"], integer=True)
    if "evaluate_test" in p:
        check_choice("evaluate_test", p["evaluate_test"], COMMON_CHOICES["evaluate_test"])
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


def build_config(sec: Section, namespace: Mapping | None = None, /, **params) -> Config:
    """Validate a notebook's parameters for section ``sec`` and return a frozen :class:`Config`
    (:func:`helpers.sections.make_config` finds ``sec`` by its name).

    ``namespace`` (the notebook's ``globals()``) supplies every parameter the section declares, so a notebook
    names each parameter once, in its ``parameters`` cell; keyword arguments win over it. Each grid of the
    section (``grid``, and ``search`` for the CNN) is expanded into ``<grid>_configs`` here, and every
    configuration is checked before anything trains.
    """
    section = sec.name
    if namespace is not None:
        missing = [k for k in sec.parameters if k not in namespace and k not in params]
        if missing:
            raise ConfigError(f"parameters {', '.join(missing)} are missing; the {section} notebook's parameters "
                              f"cell defines: {', '.join(sec.parameters)}")
        params = {**{k: namespace[k] for k in sec.parameters}, **params}
    p = common_checks(apply_profile(sec, params))
    if p["profile"] == "smoke":
        p = smoke_cap(p, sec.epoch_keys)
    sec.validate(p)
    if not sec.stages:
        sec.check_run(p)
    for key in sec.grids:
        p[f"{key}_configs"] = checked_configs(p, key, sec)
    p["section"] = section
    p["output_dir"] = resolve_output_dir(p.get("output_dir"), section)
    return Config(p)


def checked_configs(p: dict, key: str, sec: Section) -> list[dict]:
    """``p[key]`` expanded into configurations, each checked as a whole run (errors name the configuration)."""
    try:
        configs = expand_grid(p[key], varying=sec.run_parameters, fixed=(*sec.fixed, *sec.grids), name=key)
    except GridError as exc:
        raise ConfigError(str(exc)) from None
    out = []
    for i, config in enumerate(configs, 1):
        overrides = {k: v for k, v in config.items() if k != "name"}
        run = {**p, **{k: p[src] for k, src in (sec.stages or {}).get(key, {}).items()}, **overrides}
        try:
            sec.check_run(run)
        except ConfigError as exc:
            raise ConfigError(f"{key} configuration {i} ({config['name']}): {exc}") from None
        out.append({"name": config["name"], **{k: run[k] for k in overrides}})
    return [smoke_cap(c, sec.epoch_keys) for c in out] if p["profile"] == "smoke" else out


def augment_from(p: dict) -> Augment:
    """An :class:`Augment` from ``aug_*`` parameters (errors name the parameter)."""
    fields = ("rotation", "noise_std", "hflip", "brightness", "contrast", "crop_padding", "erasing")
    try:
        return Augment(**{f: p[f"aug_{f}"] for f in fields if f"aug_{f}" in p})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"parameter aug_{str(exc).removeprefix('augment ')}") from None


def check_training(s: dict, *, lr_optional: bool = False) -> None:
    """Checks of the settings every trained run has (epochs, batch size, optimizer and its numbers, schedule,
    label smoothing, initialisation); ``lr`` may be None where the section picks one per optimizer."""
    for key in ("epochs", "batch_size"):
        if key in s:
            check_positive(key, s[key], integer=True)
    if "lr" in s and not (lr_optional and s["lr"] is None):
        check_positive("lr", s["lr"])
    if "optimizer" in s:
        check_choice("optimizer", s["optimizer"], OPTIMIZERS)
    if "momentum" in s:
        check_fraction("momentum", s["momentum"], low_open=False)
    if "weight_decay" in s:
        check_nonnegative("weight_decay", s["weight_decay"])
    if "schedule" in s:
        check_choice("schedule", s["schedule"], SCHEDULES)
    if "label_smoothing" in s:
        check_fraction("label_smoothing", s["label_smoothing"], low_open=False)
    if "init" in s:
        try:
            s["init"] = check_init(s["init"])
        except ValueError as exc:
            raise ConfigError(f"parameter {exc}") from None
