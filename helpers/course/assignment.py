"""The assignment file: what an instructor hands a class, read and checked before any student folder is made.

One YAML file per assignment (``notebooks/assignments/course/fmnist_hw1.yaml`` is the example)::

    id: fmnist-hw1                 # [a-z0-9-]+
    title: "Homework 1: ..."
    profile: smoke                 # the profile every hand-in runs in
    sections: {mlp: {...}, cnn: {...}}     # parameters fixed for everyone, per section (as ``run -p`` takes them)
    variants: {cnn.init: [xavier, he], classes: [[1, 3], [0, 2]]}   # what differs between students
    questions: [{id, title, text, points, section, after}, ...]     # ``after``: a heading of the section's notebook
    rubric: {...}                  # the grading step's; carried along untouched

The file is read as the toolkit reads every file a person hands it (:mod:`helpers.textfiles`: bounded, UTF-8 or
refused by name, YAML measured before it is built); every error names the key, the value and what is allowed.
A variant axis ``section.parameter`` applies to that section; a bare ``parameter`` to every section of the
assignment that declares it.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.engine.config import PROFILE_NAMES
from helpers.textfiles import MAX_PARAMETERS_BYTES, PARAMETER_SET, InputError, check, compose, construct, decode, measure

KEYS = ("id", "title", "profile", "sections", "variants", "questions", "rubric")
REQUIRED = ("id", "title", "profile", "sections")
QUESTION_KEYS = ("id", "title", "text", "points", "section", "after")
ASSIGNMENT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
QUESTION_ID = re.compile(r"[a-z0-9_-]{1,40}")
# set for each student by `start` (who, where), or once for the whole assignment (profile): never by a section
NOT_FIXED = ("profile", "output_dir", "data_dir", "author_name", "author_id", "course")


class AssignmentError(InputError):
    """An assignment file that cannot be used; the message names the file, the key, the value and what is allowed."""


@dataclass(frozen=True)
class Question:
    """One question of an assignment, shown after the heading ``after`` of ``section``'s notebook."""

    id: str
    title: str
    text: str
    points: float
    section: str
    after: str


@dataclass(frozen=True)
class Assignment:
    """A checked assignment file. ``digest`` is the SHA-256 of the file's bytes; ``data`` those bytes."""

    id: str
    title: str
    profile: str
    sections: dict
    variants: dict
    questions: tuple
    rubric: object
    digest: str
    data: bytes = field(repr=False)
    declared: dict = field(default_factory=dict, repr=False)  # section -> its notebook's parameter names, if known

    def axis_sections(self, axis: str) -> list[str]:
        """The sections a variant axis sets: ``cnn.init`` the CNN's; ``classes`` every section declaring it (every
        section when the notebooks' parameters are not known)."""
        section, name = axis_parts(axis)
        if section is not None:
            return [section]
        return [s for s in self.sections if s not in self.declared or name in self.declared[s]]

    def parameters(self, variant: Mapping) -> dict[str, dict]:
        """Each section's parameters for a student of ``variant``: the fixed ones, the variant's, the profile."""
        out = {s: {**fixed, "profile": self.profile} for s, fixed in self.sections.items()}
        for axis, value in variant.items():
            for section in self.axis_sections(axis):
                out[section][axis_parts(axis)[1]] = value
        return out


def axis_parts(axis: str) -> tuple[str | None, str]:
    """``"cnn.init"`` as ``("cnn", "init")``, ``"classes"`` as ``(None, "classes")``."""
    section, _, name = axis.rpartition(".")
    return (section or None), name


def parameters_cell(nb: dict) -> int:
    """The index of a notebook's (JSON) cell tagged ``parameters``; ValueError when it has none."""
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise ValueError("the notebook has no cell tagged 'parameters'")


def source(cell: dict) -> str:
    """A cell's source as one string (nbformat stores it as a string or a list of lines)."""
    text = cell.get("source", "")
    return text if isinstance(text, str) else "".join(text)


def declared_parameters(nb: dict) -> list[str]:
    """The names the parameters cell of a notebook (JSON) assigns, in order."""
    tree = ast.parse(source(nb["cells"][parameters_cell(nb)]))
    return [node.targets[0].id for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)]


HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$", re.M)


def headings(cell) -> list[tuple[int, str]]:
    """``(level, text)`` of each Markdown heading of a markdown cell (``## The grid`` gives ``(2, "The grid")``)."""
    if cell.get("cell_type") != "markdown":
        return []
    text = cell.get("source", "")
    text = "".join(text) if isinstance(text, list) else text
    return [(len(m[1]), m[2].strip()) for m in HEADING.finditer(text)]


def subsection_end(cells: list, start: int) -> int:
    """The index just past the subsection that the heading cell ``cells[start]`` opens: up to the next heading of its
    level or higher (a smaller number of #), or the end of the notebook."""
    level = min(n for n, _ in headings(cells[start]))
    return next((i for i in range(start + 1, len(cells)) if any(n <= level for n, _ in headings(cells[i]))),
                len(cells))


def read_notebook(path: Path) -> dict:
    """A notebook file as JSON."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_bytes(path: Path, limit: int = MAX_PARAMETERS_BYTES) -> bytes:
    """At most ``limit`` bytes of a regular file, or :class:`AssignmentError` naming it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise AssignmentError(f"assignment file {path} is not a regular file")
        if info.st_size > limit:
            raise AssignmentError(f"assignment file {path} is {info.st_size:,} bytes; at most {limit:,} are read")
        with path.open("rb") as f:
            return f.read(limit)
    except FileNotFoundError:
        raise AssignmentError(f"assignment file {path} does not exist") from None
    except OSError as exc:
        raise AssignmentError(f"assignment file {path} cannot be read: {exc.strerror or exc}") from None


def unique_keys(node, source_name: str) -> None:
    """Refuse a mapping anywhere in the document that gives a key twice (YAML would keep the last silently)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            lines: dict = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.value in lines:
                    raise AssignmentError(f"{source_name}: key {k.value!r} is given twice (lines {lines[k.value]} and "
                                          f"{k.start_mark.line + 1}); keep one")
                if isinstance(k, yaml.ScalarNode):
                    lines[k.value] = k.start_mark.line + 1
                stack += [k, v]
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value


def load_assignment(path: str | Path, notebooks: Mapping[str, Path] | None = None,
                    check_parameters: Callable[[str, dict], object] | None = None) -> Assignment:
    """Read and check the assignment file ``path``.

    ``notebooks`` (section -> its notebook) lets the sections, parameter names and question headings be checked
    against the toolkit's notebooks; ``check_parameters(section, parameters)`` (the check ``run --check`` makes,
    raising ValueError) is then applied to each section's parameters in every variant. Raises
    :class:`AssignmentError`."""
    path = Path(path)
    name = f"assignment file {path}"
    data = read_bytes(path)
    try:
        node = compose(decode(data, name), name)
        if node is None:
            raise AssignmentError(f"{name} is empty; it needs the keys {', '.join(REQUIRED)}")
        check(node, name, PARAMETER_SET, measure(node, name))
        unique_keys(node, name)
        raw = construct(node)
    except AssignmentError:
        raise
    except InputError as exc:
        raise AssignmentError(str(exc)) from None
    nbs = {s: read_notebook(p) for s, p in (notebooks or {}).items()}
    assignment = build(raw, name, data, nbs)
    if check_parameters is not None:
        check_every_variant(assignment, check_parameters, name)
    return assignment


def build(raw, name: str, data: bytes, nbs: dict) -> Assignment:
    """The :class:`Assignment` of a constructed YAML document, each key checked (see :func:`load_assignment`)."""
    if not isinstance(raw, dict):
        raise AssignmentError(f"{name}: expected a mapping of {', '.join(KEYS)}; got {type(raw).__name__}")
    unknown = [k for k in raw if k not in KEYS]
    missing = [k for k in REQUIRED if k not in raw]
    if unknown or missing:
        raise AssignmentError(f"{name}: " + (f"unknown key(s) {', '.join(map(str, unknown))}; " if unknown else "")
                              + (f"missing key(s) {', '.join(missing)}; " if missing else "")
                              + f"allowed: {', '.join(KEYS)}")
    aid = raw["id"]
    if not isinstance(aid, str) or not ASSIGNMENT_ID.fullmatch(aid):
        raise AssignmentError(f"{name}: id {aid!r}; allowed: lower-case letters, digits and '-' (e.g. fmnist-hw1)")
    if not isinstance(raw["title"], str) or not raw["title"].strip():
        raise AssignmentError(f"{name}: title {raw['title']!r}; allowed: a non-empty text")
    if raw["profile"] not in PROFILE_NAMES:
        raise AssignmentError(f"{name}: profile {raw['profile']!r}; allowed: {', '.join(PROFILE_NAMES)}")
    declared = {s: declared_parameters(nb) for s, nb in nbs.items()}
    sections = check_sections(raw["sections"], name, declared)
    variants = check_variants(raw.get("variants") or {}, name, sections, declared)
    questions = check_questions(raw.get("questions") or [], name, sections, nbs)
    return Assignment(id=aid, title=raw["title"].strip(), profile=raw["profile"], sections=sections,
                      variants=variants, questions=questions, rubric=raw.get("rubric"),
                      digest=hashlib.sha256(data).hexdigest(), data=data, declared=declared)


def check_sections(value, name: str, declared: dict) -> dict:
    """``sections``: a mapping of known section -> its fixed parameters (a mapping, or empty)."""
    if not isinstance(value, dict) or not value:
        raise AssignmentError(f"{name}: sections {value!r}; allowed: a mapping of section name -> parameters, e.g. "
                              "{mlp: {grid: {optimizer: [adam, sgd]}}}")
    sections = {}
    for section, params in value.items():
        if declared and section not in declared:
            raise AssignmentError(f"{name}: sections.{section}: unknown section; allowed: {', '.join(declared)}")
        params = params or {}
        if not isinstance(params, dict):
            raise AssignmentError(f"{name}: sections.{section} {params!r}; allowed: a mapping of parameter -> value")
        for key in params:
            if key in NOT_FIXED:
                raise AssignmentError(f"{name}: sections.{section}.{key}: set by `start` for each student (or, for "
                                      "profile, at the top of the file); remove it")
            if section in declared and key not in declared[section]:
                raise AssignmentError(f"{name}: sections.{section}.{key}: the {section} notebook has no parameter "
                                      f"{key!r}; allowed: {', '.join(p for p in declared[section] if p not in NOT_FIXED)}")
        sections[str(section)] = dict(params)
    return sections


def check_variants(value, name: str, sections: dict, declared: dict) -> dict:
    """``variants``: axis -> a list of at least two different values; an axis names a parameter of a section of the
    assignment that no section fixes."""
    if not isinstance(value, dict):
        raise AssignmentError(f"{name}: variants {value!r}; allowed: a mapping of 'section.parameter' or "
                              "'parameter' -> [values]")
    for axis, values in value.items():
        where = f"{name}: variants.{axis}"
        section, param = axis_parts(str(axis))
        if section is not None and section not in sections:
            raise AssignmentError(f"{where}: section {section!r} is not one of the assignment's: {', '.join(sections)}")
        targets = [section] if section else list(sections)
        if param in NOT_FIXED:
            raise AssignmentError(f"{where}: {param} is set by `start` or the file's profile, not by a variant")
        if declared and not any(param in declared.get(s, ()) for s in targets):
            raise AssignmentError(f"{where}: no section of {', '.join(targets)} has a parameter {param!r}")
        fixed = [s for s in targets if param in sections[s]]
        if fixed:
            raise AssignmentError(f"{where}: sections.{fixed[0]}.{param} fixes it for everyone; remove one of the two")
        if not isinstance(values, list) or len(values) < 2:
            raise AssignmentError(f"{where}: {values!r}; allowed: a list of at least two values")
        shown = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(shown)) < len(shown):
            raise AssignmentError(f"{where}: a value is listed twice in {values!r}; list each once")
    return {str(k): list(v) for k, v in value.items()}


def check_questions(value, name: str, sections: dict, nbs: dict) -> tuple:
    """``questions``: a list of {id, title, text, points, section, after}; ids unique; ``after`` a heading of the
    section's notebook (when the notebooks are known)."""
    if not isinstance(value, list):
        raise AssignmentError(f"{name}: questions {value!r}; allowed: a list of {{{', '.join(QUESTION_KEYS)}}}")
    questions: list[Question] = []
    for i, q in enumerate(value):
        where = f"{name}: questions[{i}]"
        if not isinstance(q, dict) or set(q) != set(QUESTION_KEYS):
            keys = sorted(map(str, q)) if isinstance(q, dict) else q
            raise AssignmentError(f"{where}: {keys!r}; allowed: exactly the keys {', '.join(QUESTION_KEYS)}")
        if not isinstance(q["id"], str) or not QUESTION_ID.fullmatch(q["id"]):
            raise AssignmentError(f"{where}.id {q['id']!r}; allowed: 1-40 of lower-case letters, digits, '_', '-'")
        if q["id"] in {p.id for p in questions}:
            raise AssignmentError(f"{where}.id {q['id']!r} is used by an earlier question; ids are unique")
        for key in ("title", "text"):
            if not isinstance(q[key], str) or not q[key].strip():
                raise AssignmentError(f"{where}.{key} {q[key]!r}; allowed: a non-empty text")
        if isinstance(q["points"], bool) or not isinstance(q["points"], (int, float)) or not q["points"] > 0:
            raise AssignmentError(f"{where}.points {q['points']!r}; allowed: a number > 0")
        if q["section"] not in sections:
            raise AssignmentError(f"{where}.section {q['section']!r}; allowed: {', '.join(sections)}")
        if q["section"] in nbs:
            found = [h for cell in nbs[q["section"]]["cells"] for _, h in headings(cell)]
            if q["after"] not in found:
                raise AssignmentError(f"{where}.after {q['after']!r} is not a heading of the {q['section']} "
                                      f"notebook; allowed: {', '.join(map(repr, found))}")
        questions.append(Question(id=q["id"], title=q["title"].strip(), text=q["text"].strip(), points=q["points"],
                                  section=q["section"], after=str(q["after"])))
    return tuple(questions)


def check_every_variant(assignment: Assignment, check_parameters: Callable, name: str) -> None:
    """Each section's parameters in every combination of the axes that set it, through ``check_parameters``."""
    for section in assignment.sections:
        axes = [a for a in assignment.variants if section in assignment.axis_sections(a)]
        for values in itertools.product(*(assignment.variants[a] for a in axes)):
            variant = dict(zip(axes, values))
            try:
                check_parameters(section, assignment.parameters(variant)[section])
            except ValueError as exc:
                which = f" with {', '.join(f'{a}={v!r}' for a, v in variant.items())}" if variant else ""
                raise AssignmentError(f"{name}: sections.{section}{which}: {exc}") from None
