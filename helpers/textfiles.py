"""Files and values a person hands the toolkit as parameters (a ``-f`` file, a batch CSV or YAML, a ``-p`` value):
read with a size bound, decoded as UTF-8 or refused by name, and YAML composed and measured before anything is built.

A spreadsheet saves CSV in its locale's encoding (Windows-1252 for Excel's "CSV (Comma delimited)", UTF-16 for
"Unicode text") or as UTF-8 behind a byte-order mark; a YAML file of a few hundred bytes can expand to gigabytes
through nested aliases ("billion laughs"), refer to itself, or name a Python constructor. Each is refused here with
the file, what is wrong and what to do, instead of a traceback, a silently wrong name or a grid no machine could hold.
This module imports nothing of the package.
"""

from __future__ import annotations

import codecs
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

SAVE_AS_UTF8 = ("save it as CSV UTF-8: in Excel 'File > Save As > CSV UTF-8 (Comma delimited) (*.csv)', in "
                "LibreOffice 'Text CSV' with character set 'Unicode (UTF-8)'")
# longest first: UTF-32's little-endian mark begins with UTF-16's
BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16 (Excel's 'Unicode text')"), (codecs.BOM_UTF16_BE, "UTF-16"))
SIGNATURES = ((b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip archive"),
              (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls)"))
YAML_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge",
                                                 "timestamp")}


class InputError(ValueError):
    """A file or value that cannot be read as parameters; the message names it, the problem and what to do."""


class YAMLSyntaxError(InputError):
    """Text that is not YAML at all (a ``-p`` value that is then taken as plain text)."""


@dataclass(frozen=True)
class Limits:
    """How much a YAML document may hold once its aliases are expanded: values (nodes), characters of its scalars,
    nesting depth."""

    nodes: int
    chars: int
    depth: int


# one set of parameters (a -f file, one batch row, one -p value): the largest seed assignment has under 300 nodes
PARAMETER_SET = Limits(nodes=10_000, chars=256_000, depth=32)
MAX_PARAMETERS_BYTES = 2 * 1024 * 1024  # a -f file (the seed assignments are 1-10 kB), or a batch row's JSON
MAX_BATCH_BYTES = 16 * 1024 * 1024  # a batch file: a few hundred bytes per student
BATCH = Limits(nodes=2_000_000, chars=MAX_BATCH_BYTES, depth=PARAMETER_SET.depth + 2)


def read_text(path: str | Path, *, what: str, limit: int) -> str:
    """The text of ``path`` (``what`` names it in errors: "batch file"), at most ``limit`` bytes, UTF-8 with or
    without a byte-order mark; anything else raises :class:`InputError` saying what the file is and what to do."""
    path = Path(path)
    source = f"{what} {path}"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, /dev/zero or a pipe would be read forever or not at all
            raise InputError(f"{source} is not a regular file")
        if info.st_size > limit:
            raise InputError(f"{source} is {info.st_size / 2**20:.1f} MB; at most {limit / 2**20:g} MB is read "
                             f"(a parameter set takes a few kB): remove unused rows or columns, or split it")
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{source} does not exist") from None
    except OSError as exc:
        raise InputError(f"{source} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{source} grew past {limit / 2**20:g} MB while it was read")
    return decode(data, source)


def decode(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped), or :class:`InputError` naming the encoding
    problem: another byte-order mark, a workbook, a NUL byte, or the offset and line of the first byte that is not
    UTF-8 (with the line read as Windows-1252 when that reads, since that is the usual cause)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    for mark, name in BOMS:
        if data.startswith(mark):
            raise InputError(f"{source} is saved as {name}, not UTF-8; {SAVE_AS_UTF8}")
    for signature, name in SIGNATURES:
        if data.startswith(signature):
            raise InputError(f"{source} is {name}, not a text file; {SAVE_AS_UTF8}")
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise InputError(f"{source} holds a NUL byte at offset {at} (line {_line(data, at)}): UTF-16 "
                         f"without a byte-order mark, or not a text file; {SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        line = data[line_start:line_end if line_end >= 0 else len(data)].rstrip(b"\r")
        try:
            guess = f"; read as Windows-1252 that line is {line.decode('cp1252')[:80]!r}"
        except UnicodeDecodeError:
            guess = ""
        raise InputError(f"{source} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line "
                         f"{_line(data, exc.start)}, column {exc.start - line_start + 1}){guess}; "
                         f"{SAVE_AS_UTF8}") from None


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def compose(text: str, source: str):
    """The YAML node graph of ``text`` (None for an empty document); aliases are shared nodes, not yet expanded.
    Errors are :class:`InputError` naming ``source`` and the line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise InputError(f"{source}: nested too deeply to read (at most {PARAMETER_SET.depth} levels)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YAMLSyntaxError(f"{source}: not valid YAML: {where}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:  # a reader error: a character YAML does not allow
        raise YAMLSyntaxError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def measure(root, source: str, sizes: dict | None = None) -> dict[int, tuple[int, int, int]]:
    """For every node reachable from ``root``: (nodes, characters, depth) of its expansion, keyed by ``id(node)``.

    Computed on the shared graph (each node once), so a billion-laughs document is measured in microseconds. A node
    that contains itself (``&a [*a]``) or a tag other than YAML's plain ones (``!!python/object``, ``!!binary``,
    ``!!set``) raises :class:`InputError`. ``sizes`` (from an earlier call on the same document) is extended."""
    sizes = {} if sizes is None else sizes
    open_nodes: set[int] = set()  # on the path being expanded: meeting one again is a cycle
    stack = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            kids = [sizes[id(k)] for k in _children(node)]
            chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = (1 + sum(k[0] for k in kids), chars + sum(k[1] for k in kids),
                          1 + max((k[2] for k in kids), default=0))
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise InputError(f"{source}: line {node.start_mark.line + 1}: an alias refers to a value that contains "
                             "it, which would never end")
        if node.tag not in YAML_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise InputError(f"{source}: line {node.start_mark.line + 1}: the tag {tag} is not allowed; parameters "
                             "are plain values, lists and mappings")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return sizes


def _distinct(root) -> int:
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return len(seen)


def check(node, source: str, limits: Limits, sizes: dict | None = None) -> None:
    """Refuse a node whose expansion exceeds ``limits``, naming ``source``, what it expands to and the bound.
    ``sizes`` is :func:`measure` of a document holding ``node``, when already computed."""
    nodes, chars, depth = (sizes if sizes is not None else measure(node, source))[id(node)]
    if nodes <= limits.nodes and chars <= limits.chars and depth <= limits.depth:
        return
    aliased = "YAML aliases expand to" if nodes > _distinct(node) else "it holds"
    if nodes > limits.nodes:
        raise InputError(f"{source}: {aliased} more than {limits.nodes:,} nodes ({nodes:,}); refused before anything "
                         "is built")
    if chars > limits.chars:
        raise InputError(f"{source}: {aliased} more than {limits.chars:,} characters ({chars:,}); refused before "
                         "anything is built")
    if depth > limits.depth:
        raise InputError(f"{source}: nested {depth} levels deep; at most {limits.depth}")


def construct(node):
    """The Python value of a checked node (SafeLoader: plain values, lists, dicts; merge keys applied)."""
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise InputError(f"not a plain value: {exc}") from None


def load_value(text: str, source: str):
    """One YAML value (a ``-p`` value, a CSV cell) within :data:`PARAMETER_SET`; :class:`YAMLSyntaxError` when it
    is not YAML."""
    node = compose(text, source)
    if node is None:
        return None
    check(node, source, PARAMETER_SET)
    return construct(node)
