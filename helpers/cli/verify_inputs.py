"""What ``verify`` takes from a hand-in, and how: its ``metrics.json`` files and pages read as data (bounded in
size, never through a symbolic link, never a pickle), its parameters, and nothing else.

A hand-in's paths are the student's: ``data_dir``, an image-folder ``dataset``, a checkpoint in ``weights``, the
CNN report an autoencoder compares with. None of them is opened. A Fashion-MNIST rerun reads the instructor's copy
(:func:`reference_data`), an image folder is looked up by name among the instructor's own copies (``--data-root``),
and a report that needs anything else is not verifiable, which is said, not guessed.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from helpers.cli.runner import SECTIONS
from helpers.cli.verify_html import parse_page
from helpers.data.fashion import DataNotFoundError, find_data
from helpers.reporting.fingerprint import FASHION_MNIST_DIGEST, fashion_mnist_digest, folder_digest

MAX_METRICS_BYTES = 32 * 2**20  # a full-profile metrics.json is well under 1 MB
MAX_PAGE_BYTES = 64 * 2**20  # a full report with every figure inline is a few MB
WEIGHT_SOURCES = ("pretrain", "imagenet", "none")
# Parameters that are only shown (text of the author block): a slash in them is no path.
TEXT_PARAMETERS = frozenset({"author_name", "author_id", "course"})


class Unreadable(ValueError):
    """A hand-in file verify will not read, or cannot make sense of; the message says why."""


def find_reports(folder: str | Path) -> list[Path]:
    """Every section folder under ``folder`` (itself included): a folder holding a ``metrics.json``, or a page
    ``<section>.html`` of a known section without one. Symbolic links to folders are not followed (a hand-in's
    link may lead anywhere on the grader's machine); a ``metrics.json`` that is itself a link is listed, to be
    refused by :func:`read_bounded`."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".cache")  # the cache holds no reports, and may hold many folders
        if "metrics.json" in files or any(f"{s}.html" in files for s in SECTIONS):
            found.append(Path(root))
    return sorted(found)


def read_bounded(path: Path, limit: int) -> bytes:
    """A hand-in's regular file, whole, if it is at most ``limit`` bytes; :class:`Unreadable` otherwise.

    Opened without following a link and without blocking (a named pipe would wait for ever), and checked to be a
    regular file by the descriptor that is then read, so the file cannot be swapped in between."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise Unreadable(f"{path.name} is a symbolic link (to {os.readlink(path)!r}): a hand-in's files must be its "
                         "own, verify does not follow links")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be opened: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise Unreadable(f"{path.name} is {info.st_size / 2**20:,.0f} MB; verify reads at most "
                             f"{limit / 2**20:,.0f} MB (a report's is far smaller)")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Unreadable(f"{path.name} grew past {limit / 2**20:,.0f} MB while it was read")
    return data


def load_metrics(path: Path) -> dict:
    """A hand-in's ``metrics.json``, checked to have the shape verify relies on; :class:`Unreadable` otherwise."""
    raw = read_bounded(path, MAX_METRICS_BYTES)
    try:
        metrics = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Unreadable(f"metrics.json is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise Unreadable("metrics.json is nested too deeply to be a report's") from None
    except ValueError as exc:
        raise Unreadable(f"metrics.json is not JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise Unreadable(f"metrics.json holds a {type(metrics).__name__}, not a report's mapping")
    section = metrics.get("section")
    if not isinstance(section, str) or section not in SECTIONS:
        raise Unreadable(f"metrics.json names section {str(section)[:60]!r}; allowed: {', '.join(SECTIONS)}")
    for key, kind in (("parameters", dict), ("fingerprint", dict), ("data", dict), ("environment", dict),
                      ("best", dict)):
        if key in metrics and metrics[key] is not None and not isinstance(metrics[key], kind):
            raise Unreadable(f"metrics.json {key} is a {type(metrics[key]).__name__}, not a mapping")
    if not isinstance(metrics.get("parameters"), dict):
        raise Unreadable("metrics.json records no parameters: there is nothing to rerun")
    fp = metrics.get("fingerprint") or {}
    bad = [k for k, v in fp.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise Unreadable(f"metrics.json fingerprint.{bad[0]} is not a digest")
    return metrics


def load_page(path: Path):
    """A hand-in's HTML report, parsed (:func:`helpers.cli.verify_html.parse_page`); :class:`Unreadable` if it cannot
    be read."""
    raw = read_bounded(path, MAX_PAGE_BYTES)
    return parse_page(raw.decode("utf-8", errors="replace"))


@dataclass
class Reference:
    """The instructor's Fashion-MNIST: its folder, its data digest, and whether that is Fashion-MNIST's known one
    (or whether the instructor named this copy on purpose)."""

    folder: Path | None
    digest: str | None
    known: bool
    chosen: bool
    problem: str | None = None

    def describe(self) -> str:
        """The line of the verify output on the reference data: its folder, digest and whether it is known."""
        if self.folder is None:
            return f"reference data: none ({self.problem})"
        what = ("Fashion-MNIST's known contents" if self.known else
                "NOT Fashion-MNIST's known contents" + (": accepted because --reference-data names it"
                                                        if self.chosen else ""))
        return f"reference data: {self.folder} (digest {self.digest}, {what})"


def reference_data(folder: str | Path | None = None) -> Reference:
    """The Fashion-MNIST copy reruns read: ``folder`` when the instructor names one (``--reference-data``),
    else the toolkit's own default places (``$FASHION_MNIST_DIR``, the project's ``data/``, Debian's package),
    never a folder a hand-in names."""
    try:
        files = find_data(Path(folder).expanduser() if folder else None)
        digest = fashion_mnist_digest(files)
    except (DataNotFoundError, OSError, ValueError, EOFError) as exc:
        first = str(exc).splitlines()[0]
        return Reference(None, None, False, folder is not None, f"no usable Fashion-MNIST: {first}")
    return Reference(files[("train", "images")].parent, digest, digest == FASHION_MNIST_DIGEST, folder is not None)


def _looks_like_path(value) -> bool:
    if isinstance(value, str):
        return "/" in value or "\\" in value or value.startswith(("~", "."))
    if isinstance(value, dict):
        return any(_looks_like_path(v) for v in value.values())
    if isinstance(value, list):
        return any(_looks_like_path(v) for v in value)
    return False


def _weights_values(params: dict) -> list:
    values = [params.get("weights")]
    grid = params.get("grid")
    if isinstance(grid, dict) and isinstance(grid.get("weights"), list):
        values += grid["weights"]
    elif isinstance(grid, list):
        values += [c.get("weights") for c in grid if isinstance(c, dict) and "weights" in c]
    return [v for v in values if v is not None]


def rerun_parameters(metrics: dict, declared, *, reference: Reference, data_root: str | Path | None,
                     scratch: Path) -> tuple[dict, list[str], str | None]:
    """The parameters a rerun gets: the recorded ones its notebook declares, with every path replaced.

    Returns ``(parameters, names replaced, why it cannot be verified or None)``. ``scratch`` is a folder of the
    rerun's own (the autoencoder's side-by-side is pointed at a missing file there)."""
    params = {k: v for k, v in metrics["parameters"].items() if k in declared and k != "output_dir"}
    replaced = ["output_dir"]
    if "data_dir" in declared:
        if reference.folder is None:
            return params, replaced, f"the instructor has no Fashion-MNIST to rerun with ({reference.problem})"
        params["data_dir"] = str(reference.folder)
        replaced.append("data_dir")
    if "cnn_metrics" in declared:
        # the side-by-side reads another report: the rerun shows none rather than read a path the hand-in names
        params["cnn_metrics"] = str(scratch / "no-cnn-report" / "metrics.json")
        replaced.append("cnn_metrics")
    dataset = params.get("dataset", "fashion_mnist")
    if dataset != "fashion_mnist":
        name = Path(str(dataset)).name if isinstance(dataset, str) else ""
        if not data_root:
            return params, replaced, (f"it read the image folder dataset={str(dataset)[:80]!r} of the student's "
                                      f"machine; verify reads only the instructor's copies: pass --data-root FOLDER "
                                      f"holding a folder named {name!r}")
        copy = Path(data_root).expanduser() / name
        if name in ("", ".", "..") or not copy.is_dir():
            return params, replaced, f"no folder {name!r} in --data-root {data_root} for dataset={str(dataset)[:80]!r}"
        recorded = (metrics.get("fingerprint") or {}).get("data")
        if folder_digest(copy) != recorded:
            return params, replaced, (f"the instructor's copy {copy} is not the data the report read (digest "
                                      f"{folder_digest(copy)}, the report's {recorded})")
        params["dataset"] = str(copy)
        replaced.append("dataset")
    checkpoints = [w for w in _weights_values(params) if not (isinstance(w, str) and w in WEIGHT_SOURCES)]
    if checkpoints:
        return params, replaced, (f"weights={str(checkpoints[0])[:80]!r} is a checkpoint file of the student's "
                                  "machine; verify loads no file a hand-in names")
    paths = [k for k, v in params.items() if k not in TEXT_PARAMETERS and k not in replaced and _looks_like_path(v)]
    if paths:
        return params, replaced, (f"parameter {paths[0]}={str(params[paths[0]])[:80]!r} looks like a path of the "
                                  "student's machine; verify uses no path a hand-in names")
    return params, replaced, None
