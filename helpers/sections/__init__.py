"""Sections: one module per report section (``mlp``, ``cnn``, ``transfer`` with its ``backbones``, ``autoencoder``),
each holding only what is particular to it: its parameters, profiles, checks and the facts the engine and the
reports need about it (its :class:`~helpers.engine.config.Section`, ``SECTION``).

This package lists them, in :data:`SECTIONS`: whoever needs a section by its name (a notebook's
:func:`make_config`, the command line's checks) asks here, and nothing registers itself on import.

May import: ``reporting``, ``engine``, ``models``, ``data`` and the top-level modules; never ``cli``.
"""

from __future__ import annotations

from collections.abc import Mapping

from helpers.engine.config import Config, ConfigError, Section, build_config, section_choices
from helpers.engine.config import smoke_cap as _smoke_cap
from helpers.sections import autoencoder, cnn, mlp, transfer

SECTIONS: dict[str, Section] = {m.SECTION.name: m.SECTION for m in (mlp, cnn, transfer, autoencoder)}


def get_section(name: str) -> Section:
    """The :class:`~helpers.engine.config.Section` called ``name``; a :class:`ConfigError` naming the allowed ones
    for any other name."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown section {name!r}; allowed: {', '.join(SECTIONS)}")
    return SECTIONS[name]


def make_config(section: str, namespace: Mapping | None = None, /, **params) -> Config:
    """Validate a notebook's parameters for ``section`` and return a frozen :class:`~helpers.engine.config.Config`
    (:func:`helpers.engine.config.build_config`): ``make_config("mlp", globals())`` in a notebook."""
    return build_config(get_section(section), namespace, **params)


def parameter_choices(section: str) -> dict[str, tuple]:
    """The words each parameter of ``section`` takes (:func:`helpers.engine.config.section_choices`)."""
    return section_choices(get_section(section))


def value_words(name: str) -> tuple:
    """The words parameter ``name`` takes in any section (a ``-p`` value goes to every section that declares it):
    ``schedule`` gives ('none', 'step', 'cosine', 'onecycle'); a parameter of no words gives ()."""
    words: list = []
    for sec in SECTIONS.values():
        words += [w for w in section_choices(sec).get(name, ()) if w not in words]
    return tuple(words)


def smoke_values(values: dict, section: str | None = None) -> dict:
    """``values`` as the smoke profile runs them: every epoch count of ``section`` (of any section when None)
    capped (:func:`helpers.engine.config.smoke_cap`)."""
    secs = [get_section(section)] if section else list(SECTIONS.values())
    return _smoke_cap(values, tuple(dict.fromkeys(k for sec in secs for k in sec.epoch_keys)))


def volatile_keys(section: str | None = None) -> frozenset:
    """The ``metrics.json`` keys that ``section`` (any section when None) declares volatile: what its fingerprint
    leaves out beside :data:`helpers.reporting.fingerprint.VOLATILE`."""
    secs = [get_section(section)] if section else list(SECTIONS.values())
    return frozenset(k for sec in secs for k in sec.volatile)
