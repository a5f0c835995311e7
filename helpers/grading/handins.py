"""A hand-in read as data: a ``handin-<id>.zip``, the folder it unpacks to, or a plain report folder, all made into
one :class:`HandIn` record. Every reading of a hand-in's layout lives here, so a change of the hand-in format is
one module's business.

Nothing is unpacked to disk and nothing is executed. An archive is read member by member in memory, within
:data:`LIMITS`; a member whose path leaves the archive (``../``, ``/etc``, ``C:``), a link, or an archive that would
unpack beyond the size limit is refused by name. A folder is walked without following links, and a link in it is
refused by name. Whatever cannot be read becomes a problem of that hand-in, never an exception for the class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path, PurePosixPath

SECTION_NAMES = ("mlp", "cnn", "transfer", "autoencoder")
# What grading reads of a page does not need the figures' bytes, the style sheet or the code highlighting's
# spans; dropping them makes a report's page several times quicker to parse (300 hand-ins in a minute). A figure
# keeps a digest of its bytes; a span with any attribute but a class (a style that could hide text) is kept.
FIGURE_DATA = re.compile(r"data:image/([a-z+.-]+);base64,[A-Za-z0-9+/=\s]{256,}")
STYLE_BLOCK = re.compile(r"(<style\b[^>]*>).*?(</style>)", re.S | re.I)
PLAIN_SPAN = re.compile(r"<span(?:\s+class=\"[\w -]*\")?\s*>|</span>", re.I)
TAG = re.compile(r"<[^>]*>")
KEPT_SUFFIXES = (".json", ".html", ".pdf")  # what grading reads; notebooks, figures and the rest are not opened


@dataclass(frozen=True)
class Limits:
    """How much one hand-in may hold: files, bytes in all once unpacked, bytes per file read, compression ratio."""

    files: int = 2000
    total: int = 256 * 2**20
    per_file: int = 64 * 2**20
    ratio: int = 200  # a report's HTML compresses ~3:1, a PDF ~1:1; a zip bomb 1000:1 and more


LIMITS = Limits()


class Refused(ValueError):
    """A hand-in (or one of its files) that is not read; the message says which and why."""


@dataclass
class Section:
    """One section of a hand-in: its ``metrics.json`` (None when unreadable), page text, PDF bytes' digest, and
    the paths they came from inside the hand-in."""

    name: str
    metrics: dict | None = None
    html: str | None = None
    pdf: bool = False
    folder: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class HandIn:
    """What grading knows of one hand-in (see the module docstring)."""

    source: Path
    kind: str  # "zip", "folder" or "report"
    digest: str = ""  # of the bytes read: a hand-in checked before is recognised by it
    student: dict = field(default_factory=dict)  # name, id (as recorded by the hand-in)
    assignment: dict = field(default_factory=dict)  # id, digest
    sections: dict[str, Section] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    manifest: dict | None = None
    problems: list[str] = field(default_factory=list)  # integrity problems: refused files, digests that differ
    broken: str = ""  # why nothing of it could be read ("" when it could)
    pages: dict[str, bytes] = field(default_factory=dict)  # what the grader reads: <section>.html, handin.pdf
    pdfs: dict[str, bytes] = field(default_factory=dict)  # each section's PDF

    @property
    def label(self) -> str:
        """The hand-in as the grader named it: its file or folder name."""
        return self.source.name


def _safe_member(name: str) -> str | None:
    """The member's path if it stays inside the archive, else None."""
    if "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name):
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    return str(path)


def read_zip(path: Path, limits: Limits = LIMITS) -> tuple[dict[str, bytes], list[str], str]:
    """The kept members of an archive (path -> bytes), the refusals, and the archive's digest."""
    raw = _read_file(path, limits.total)
    files, problems = {}, []
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Refused(f"{path.name} is not a readable zip archive ({exc})") from None
    infos = archive.infolist()
    if len(infos) > limits.files:
        raise Refused(f"{path.name} holds {len(infos):,} files; a hand-in holds at most {limits.files:,}")
    declared = sum(i.file_size for i in infos)
    if declared > limits.total:
        raise Refused(f"{path.name} would unpack to {declared / 2**20:,.0f} MB; at most {limits.total / 2**20:,.0f} "
                      "MB are read (an archive bomb, or far more than a hand-in)")
    budget = limits.total
    for info in infos:
        name = _safe_member(info.filename)
        if name is None:
            problems.append(f"refused {info.filename[:120]!r}: its path leaves the archive")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"refused {name[:120]!r}: a symbolic link (a hand-in's files must be its own)")
            continue
        if info.is_dir() or not name.endswith(KEPT_SUFFIXES):
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.ratio:
            problems.append(f"refused {name[:120]!r}: compressed {info.file_size // max(1, info.compress_size):,}:1 "
                            "(an archive bomb)")
            continue
        try:
            with archive.open(info) as f:
                data = f.read(min(limits.per_file, budget) + 1)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as exc:  # RuntimeError: encrypted
            problems.append(f"refused {name[:120]!r}: cannot be unpacked ({exc})")
            continue
        if len(data) > min(limits.per_file, budget):
            raise Refused(f"{path.name}: {name[:120]!r} unpacks beyond the size limit "
                          f"({min(limits.per_file, budget) / 2**20:,.0f} MB)")
        budget -= len(data)
        files[name] = data
    return files, problems, hashlib.sha256(raw).hexdigest()


def _read_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, not through a link, at most ``limit`` bytes; :class:`Refused` otherwise."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Refused(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise Refused(f"{path.name} is a symbolic link: refused (a hand-in's files must be its own)")
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"{path.name} is not a regular file")
    if info.st_size > limit:
        raise Refused(f"{path.name} is {info.st_size / 2**20:,.0f} MB; at most {limit / 2**20:,.0f} MB are read")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Refused(f"{path.name} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"{path.name} grew past {limit / 2**20:,.0f} MB while it was read")
    return data


def read_folder(root: Path, limits: Limits = LIMITS) -> tuple[dict[str, bytes], list[str], str]:
    """The kept files of a folder (relative path -> bytes), the refusals, and a digest of what was read."""
    files, problems, digest, budget, count = {}, [], hashlib.sha256(), limits.total, 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                problems.append(f"refused {str((here / d).relative_to(root))[:120]!r}: a symbolic link")
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink() and d not in (".cache", ".git"))
        for name in sorted(names):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                problems.append(f"refused {rel[:120]!r}: a symbolic link (a hand-in's files must be its own)")
                continue
            if not name.endswith(KEPT_SUFFIXES):
                continue
            count += 1
            if count > limits.files:
                raise Refused(f"{root.name} holds more than {limits.files:,} report files")
            try:
                data = _read_file(path, min(limits.per_file, budget))
            except Refused as exc:
                problems.append(f"refused {rel[:120]!r}: {exc}")
                continue
            budget -= len(data)
            files[rel] = data
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return files, problems, digest.hexdigest()


def _json(data: bytes, name: str, problems: list[str]) -> dict | None:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        problems.append(f"{name} is not JSON ({str(exc)[:80]})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{name} holds a {type(value).__name__}, not a mapping")
        return None
    return value


def _strip_top(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files relative to the hand-in's root: an archive that wraps everything in one folder is unwrapped."""
    tops = {p.split("/", 1)[0] for p in files}
    if len(tops) == 1 and all("/" in p for p in files):
        top = next(iter(tops))
        return {p[len(top) + 1:]: v for p, v in files.items()}
    return files


def manifest_entries(manifest: dict) -> dict[str, str]:
    """``handin.json``'s file digests as path -> sha256 hex (``files`` as a mapping, or a list of records)."""
    files = manifest.get("files")
    if isinstance(files, dict):
        return {str(k): (v.get("sha256") if isinstance(v, dict) else str(v)) for k, v in files.items()}
    if isinstance(files, list):
        return {str(f.get("path")): str(f.get("sha256")) for f in files if isinstance(f, dict)}
    return {}


def _manifest_problems(manifest: dict, files: dict[str, bytes]) -> list[str]:
    problems = []
    entries = manifest_entries(manifest)
    if not entries:
        return ["handin.json lists no file digests"]
    for path, want in sorted(entries.items()):
        if not path.endswith(KEPT_SUFFIXES):
            continue
        if path not in files:
            problems.append(f"handin.json lists {path[:120]!r}, which the hand-in does not hold")
        elif hashlib.sha256(files[path]).hexdigest() != want:
            problems.append(f"{path[:120]} was changed after the hand-in was packed: its sha256 is not the one "
                            "handin.json records")
    extra = sorted(p for p in files if p not in entries and p != "handin.json")
    problems += [f"{p[:120]} is not in handin.json's list (added after packing)" for p in extra[:5]]
    return problems


def _sections(files: dict[str, bytes], problems: list[str]) -> dict[str, Section]:
    found: dict[str, Section] = {}
    for path in sorted(p for p in files if p.rsplit("/", 1)[-1] == "metrics.json"):
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        metrics = _json(files[path], path, problems)
        section = (metrics or {}).get("section")
        if section not in SECTION_NAMES:
            problems.append(f"{path}: names no known section ({str(section)[:40]!r})")
            continue
        if section in found:
            problems.append(f"{path}: a second {section} report (the first, in {found[section].folder!r}, is read)")
            continue
        prefix = f"{folder}/" if folder else ""
        html = files.get(f"{prefix}{section}.html")
        found[section] = Section(section, metrics, light_page(html) if html is not None else None,
                                 f"{prefix}{section}.pdf" in files, folder)
    return {s: found[s] for s in SECTION_NAMES if s in found}  # the toolkit's order


def light_page(data: bytes) -> str:
    """A page's text without what grading does not read (see :data:`FIGURE_DATA`)."""
    text = data.decode("utf-8", errors="replace")
    text = FIGURE_DATA.sub(lambda m: f"data:image/{m[1]};base64,{hashlib.sha256(m[0].encode()).hexdigest()[:24]}",
                           text)
    return PLAIN_SPAN.sub("", STYLE_BLOCK.sub(r"\1\2", text))


def page_text(page: str) -> str:
    """The words of a (light) page, tags aside: what a student may quote from their own report."""
    return unescape(TAG.sub(" ", STYLE_BLOCK.sub(" ", page)))


def _identity(handin: HandIn, meta: dict) -> None:
    for source in (meta.get("handin"), meta.get("course")):
        if isinstance(source, dict):
            student = source.get("student") if isinstance(source.get("student"), dict) else {}
            assignment = source.get("assignment") if isinstance(source.get("assignment"), dict) else {}
            handin.student = handin.student or {k: str(student[k]) for k in ("name", "id") if student.get(k)}
            handin.assignment = handin.assignment or {k: str(assignment[k]) for k in ("id", "digest")
                                                      if assignment.get(k)}
    if not handin.student:  # a plain report folder: the author block's parameters
        for sec in handin.sections.values():
            params = (sec.metrics or {}).get("parameters") or {}
            if params.get("author_id") or params.get("author_name"):
                handin.student = {"name": str(params.get("author_name") or ""), "id": str(params.get("author_id")
                                                                                          or "")}
                break


def read_handin(path: str | Path, limits: Limits = LIMITS) -> HandIn:
    """Read one hand-in (see the module docstring); never raises for what the hand-in holds."""
    path = Path(path)
    kind = "zip" if path.suffix.lower() == ".zip" else "folder"
    handin = HandIn(path, kind)
    if path.is_symlink():
        handin.broken = f"{path.name} is a symbolic link: refused (a hand-in's files must be its own)"
        return handin
    try:
        files, refused, handin.digest = read_zip(path, limits) if kind == "zip" else read_folder(path, limits)
    except Refused as exc:
        handin.broken = str(exc)
        return handin
    files = _strip_top(files)
    handin.problems += refused
    meta = {}
    for name in ("handin", "course", "answers"):
        if f"{name}.json" in files:
            meta[name] = _json(files[f"{name}.json"], f"{name}.json", handin.problems)
    handin.manifest = meta.get("handin")
    if handin.manifest is None:
        handin.kind = "report" if kind == "folder" else kind
    else:
        handin.problems += _manifest_problems(handin.manifest, files)
    handin.answers = _answers(meta.get("answers"), handin.manifest)
    handin.sections = _sections(files, handin.problems)
    handin.pages = {f"{s}.html": files[(f"{sec.folder}/" if sec.folder else "") + f"{s}.html"]
                    for s, sec in handin.sections.items() if sec.html is not None}
    if "handin.pdf" in files:
        handin.pages["handin.pdf"] = files["handin.pdf"]
    handin.pdfs = {s: files[(f"{sec.folder}/" if sec.folder else "") + f"{s}.pdf"] for s, sec in handin.sections.items()
                   if sec.pdf}
    _identity(handin, meta)
    if not handin.sections and not handin.answers:
        # what was refused is why nothing is left: say that first, not only that nothing was found
        why = "; ".join(handin.problems[:3]) + (f" (and {len(handin.problems) - 3} more)"
                                                if len(handin.problems) > 3 else "")
        handin.broken = "no report in it (no metrics.json of a known section)" + (f": {why}" if why else "")
    return handin


def _answers(answers: dict | None, manifest: dict | None) -> dict[str, str]:
    """Question id -> answer text, from ``answers.json`` (flat, or under ``answers``) or the manifest."""
    source = answers if answers is not None else (manifest or {}).get("answers")
    if isinstance(source, dict) and isinstance(source.get("answers"), dict):
        source = source["answers"]
    if not isinstance(source, dict):
        return {}
    out = {}
    for k, v in source.items():
        text = v.get("text", v.get("source", "")) if isinstance(v, dict) else v
        out[str(k)] = text if isinstance(text, str) else ""
    return out


def find_handins(folder: str | Path, *, exclude: Path | None = None) -> list[Path]:
    """The hand-ins in ``folder``: each ``*.zip`` and each sub-folder (a link is listed too, to be refused by
    name), hidden ones and ``exclude`` (the grading's own output folder) aside."""
    folder = Path(folder)
    skip = exclude.resolve() if exclude is not None else None
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    return [p for p in entries if (p.suffix.lower() == ".zip" or p.is_dir() or p.is_symlink())
            and not p.name.startswith(".") and (skip is None or p.is_symlink() or p.resolve() != skip)]
