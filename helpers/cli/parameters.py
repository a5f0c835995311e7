"""Parameters on their way in: a ``-p`` value, a ``-f`` file, a batch file's cell, each typed by the notebook
parameter it fills, so that what arrives in the notebook is what the student or instructor meant (an id ``0042``
stays text, ``schedule: none`` stays the word, ``epochs: none`` is None) and nothing is read unbounded
(:mod:`helpers.textfiles`); and the check of a section's parameters as its notebook will make it
(:func:`check_section`)."""

from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path

import yaml

from helpers.cli.runner import notebook_parameters
from helpers.engine.config import Config
from helpers.paths import NOTEBOOKS_DIR
from helpers.sections import make_config, value_words
from helpers.textfiles import (
    MAX_PARAMETERS_BYTES,
    PARAMETER_SET,
    InputError,
    YAMLSyntaxError,
    check,
    compose,
    construct,
    load_value,
    read_text,
)

NONE_WORDS = ("None", "none", "null", "~")
# who the report is by, and a batch row's folder name: the text as written (a student named "Null" or "True", an
# id "0042" or "1e3"), on one line
TEXT_PARAMETERS = ("name", "author_name", "author_id", "course")
# dropped from that text: direction overrides and isolates, which reorder what follows them on the grader's screen
BIDI_CONTROLS = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\ufeff"}


def parse_value(text: str, source: str = "a -p value"):
    """A ``-p`` value as papermill would type it: numbers, booleans, None, lists; otherwise a string.

    YAML is read within :data:`helpers.textfiles.PARAMETER_SET`: a value whose aliases expand past it, or with a
    tag such as ``!!python/object``, raises :class:`~helpers.textfiles.InputError` naming ``source``.
    """
    if text in NONE_WORDS:
        return None
    # YAML 1.1 reads "1e-3" as a string; papermill's -p makes it a float, so try numbers first.
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        value = load_value(text, source)
    except YAMLSyntaxError:
        return text
    # dicts too: a grid ({parameter: [values]}) or an architecture spec given with -p
    return text if value is None else value


def parameter_words(name: str) -> tuple:
    """The words parameter ``name`` takes in any section (``schedule``: 'none', 'step', ...), from the sections'
    declarations (:func:`helpers.sections.value_words`)."""
    return value_words(name)


def declared_type(name: str, declared: dict | None):
    """The type of a notebook parameter's default value (papermill's inspected ``default``), or None."""
    default = (declared or {}).get(name, {}).get("default")
    try:
        return type(ast.literal_eval(default)) if default is not None else None
    except (ValueError, SyntaxError):
        return None


def typed_parameter(name: str, text: str, declared: dict | None):
    """A parameter given as text (``-p``, a CSV cell, a YAML scalar), typed by the notebook parameter it fills.

    A parameter whose default is text keeps the text as given, so identifiers stay identifiers: student id
    ``0042`` is not the number 42 (nor ``0123`` the octal 83), ``yes`` is not True. A mapping or list written
    for it (``init: {linear: normal}``) is still read as one. A word the parameter takes stays that word, ``none``
    included (``schedule none``, ``pool none``); where it takes no such word ``none`` is None (``epochs none``: the
    profile's), and ``None``, ``null`` and ``~`` always are. :data:`TEXT_PARAMETERS` are text whatever they hold.
    Other parameters are typed as papermill's ``-p`` types them (:func:`parse_value`).
    """
    text = text.strip()
    # a batch column or assignment key may name one section's parameter ("mlp.schedule"): typed as that parameter,
    # so that "none" stays the word schedule takes
    name = name.rpartition(".")[2]
    if name in TEXT_PARAMETERS:
        kept = "".join(ch for ch in text if ch not in BIDI_CONTROLS and (ch.isspace() or ord(ch) >= 32) and ch != "\x7f")
        return " ".join(kept.split())
    if text in parameter_words(name):
        return text
    if declared_type(name, declared) is str and text not in NONE_WORDS and not text.startswith(("{", "[")):
        return text
    return parse_value(text, f"parameter {name}")


def load_yaml_parameters(node, declared: dict | None, source: str = "parameters") -> dict:
    """A YAML mapping node (measured by :func:`helpers.textfiles.check`) as parameters, each scalar typed by
    :func:`typed_parameter` from its source text (YAML itself would read ``author_id: 0123`` as the octal number
    83); lists and mappings as YAML reads them; merge keys (``<<: *common``) applied. A parameter given twice, or a
    name that is not plain text, raises :class:`~helpers.textfiles.InputError` naming ``source`` and the lines."""
    merge = "tag:yaml.org,2002:merge"
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(f"{source}: line {line}: a parameter name must be plain text")
        if key_node.tag != merge and key_node.value in lines:
            raise InputError(f"{source}: parameter {key_node.value} is given twice (lines {lines[key_node.value]} "
                             f"and {line}); keep one")
        lines[key_node.value] = line
    flat = yaml.MappingNode(node.tag, list(node.value), node.start_mark, node.end_mark)  # the shared node unchanged
    try:
        yaml.SafeLoader("").flatten_mapping(flat)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: {getattr(exc, 'problem', None) or exc}") from None
    out = {}
    for key_node, value_node in flat.value:  # merged values first: the row's own win
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(f"{source}: line {key_node.start_mark.line + 1}: a parameter name must be plain text")
        if isinstance(value_node, yaml.ScalarNode) and value_node.style is None:
            out[key_node.value] = typed_parameter(key_node.value, value_node.value, declared)
        else:
            out[key_node.value] = construct(value_node)
    return out


def _unique_keys(source: str):
    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise InputError(f"{source}: {key!r} is given twice; keep one")
            out[key] = value
        return out
    return pairs


def read_parameters_file(path: Path, declared: dict | None) -> dict:
    """A ``-f`` file's parameters: YAML (``name: value``, typed by :func:`load_yaml_parameters`) or, for a ``.json``
    file, an object whose values are taken as JSON types them (how a batch hands each row its parameters: no value
    is ever read as an option). At most :data:`~helpers.textfiles.MAX_PARAMETERS_BYTES`, UTF-8, and YAML within
    :data:`~helpers.textfiles.PARAMETER_SET`; otherwise :class:`~helpers.textfiles.InputError`."""
    text = read_text(path, what="parameters file", limit=MAX_PARAMETERS_BYTES)
    source = f"parameters file {path}"
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys(source))
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}: not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise InputError(f"{source}: nested too deeply to read") from None
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected an object of name: value, got {type(data).__name__}")
        return data
    node = compose(text, source)
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {node.value[:40]!r}"
        raise InputError(f"{source}: expected a mapping of name: value (one per line), got {kind}")
    check(node, source, PARAMETER_SET)
    return load_yaml_parameters(node, declared, source)


def section_parameters(section: str, params: dict, declared: dict) -> dict:
    """The parameters of ``params`` that reach ``section`` (whose notebook declares ``declared``): every name it
    declares, and ``section.name`` (as ``students.csv`` and ``-p cnn.init he`` give a parameter of one section
    alone), which wins over the bare name."""
    own = {k.rpartition(".")[2]: v for k, v in params.items() if k.rpartition(".")[0] == section}
    return {**{k: v for k, v in params.items() if k in declared}, **own}


def unknown_parameters(params: dict, declared: dict[str, dict]) -> list[str]:
    """The names in ``params`` that reach no section of ``declared`` (section -> its declared parameters): a bare
    name no section declares, or ``section.name`` for a section not in ``declared`` or a name it does not declare."""
    def known(k: str) -> bool:
        section, _, name = k.rpartition(".")
        return name in declared[section] if section in declared else any(k in d for d in declared.values())
    return [k for k in params if not known(k)]


def check_section(section: str, parameters: dict, output_dir: Path) -> Config:
    """What ``section``'s notebook makes of ``parameters`` as ``run`` hands them to it: its parameters cell's
    defaults, then these (papermill's injected cell), validated by the :func:`~helpers.sections.make_config` its next
    cell calls, in the folder its kernel runs in. Returns the :class:`~helpers.engine.config.Config`; raises
    :class:`~helpers.engine.config.ConfigError`. Starts no kernel: a check takes a fraction of a second."""
    namespace = {k: ast.literal_eval(v["default"]) for k, v in notebook_parameters(section).items()}
    namespace.update({**parameters, "output_dir": str((Path(output_dir) / section).resolve())})
    with contextlib.chdir(NOTEBOOKS_DIR):  # relative paths (data_dir, dataset) resolve as the kernel's do
        return make_config(section, namespace)
