"""Fingerprints written with every ``metrics.json``, and the digests and comparisons that ``verify``
(:mod:`helpers.cli.verify_report`) checks them with.

A fingerprint holds four short digests: of the parameters, of the notebook (the source of its code cells other
than the parameters cell, which has its own digest: neither outputs nor Markdown), of the data (for Fashion-MNIST,
of the four files' decoded contents, so any copy of the real data set gives :data:`FASHION_MNIST_DIGEST`), and of
the results (``metrics.json`` without what changes from run to run: timings, dates, paths); a course notebook's
adds a fifth, of the student's answers (:func:`answers_digest`), so that words written in the notebook never
break it while code changed is still named. A ``metrics.json`` whose numbers were edited no longer matches its
results digest; a notebook whose code changed after the run no longer matches its notebook digest, and answers
edited after the run no longer match theirs. The digest is of the notebook that ran (:func:`running_notebook`:
a student's folder's own copy, not the toolkit's). The recipe is public, so a forger can
compute the digests again: the fingerprint catches careless edits, the rerun and the page's comparison with it
catch the rest (a seal no student can recompute would need a secret the toolkit does not have).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path

from helpers.data.fashion import FASHION_MNIST_MD5, DataNotFoundError, contents_md5, find_data

# A course notebook's question cells and the student's answer cells (markdown, tagged, with the question's id in
# their metadata): helpers.course.answers reads them; the fingerprint digests the answers apart from the code.
QUESTION_TAG, ANSWER_TAG = "question", "answer"
PARAMETER_TAGS = frozenset({"parameters", "injected-parameters"})  # digested as parameters, not as code
# The notebook a kernel runs, which `run` tells it (a student's folder's own copy); JupyterLab's server names it in
# JPY_SESSION_NAME; else the toolkit's notebook of the section is what ran.
NOTEBOOK_ENV = "HELPERS_NOTEBOOK"

# What may differ between two identical runs of any section: how long things took, when, where the files went,
# what only describes the machine, and whether a result was computed or read from the cache (the same numbers either
# way). A section adds its own keys (:attr:`helpers.engine.config.Section.volatile`, e.g. the autoencoder's
# ae_seconds): the functions here take them as ``volatile``.
VOLATILE = frozenset({
    "seconds", "seconds_mean", "seconds_std", "wall_seconds", "retrain_seconds", "date", "output_dir", "checkpoint",
    "ms_per_image_batch1", "images_per_second", "environment", "fingerprint", "source", "cache",
})
def digest(obj) -> str:
    """A short, stable digest of JSON-like data (16 hex digits of SHA-256 over its sorted JSON)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stable(obj, volatile=frozenset()):
    """``obj`` without its :data:`VOLATILE` keys and the section's own ``volatile`` ones, at any depth."""
    drop = VOLATILE | frozenset(volatile)
    if isinstance(obj, dict):
        return {k: stable(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [stable(v, drop) for v in obj]
    return obj


def cell_question_id(cell) -> str | None:
    """The question id a question or answer cell names in its metadata (None for any other cell)."""
    qid = (cell.get("metadata", {}).get("question") or {}).get("id")
    return qid if isinstance(qid, str) else None


def answer_sources(nb) -> dict[str, str]:
    """``{question id: source}`` of a notebook's answer cells, as the student wrote them."""
    return {cell_question_id(c): c.source for c in nb.cells if c.cell_type == "markdown"
            and ANSWER_TAG in c.get("metadata", {}).get("tags", []) and cell_question_id(c)}


def code_cells(nb) -> list[tuple[int, str]]:
    """``(number, source)`` of the code cells a notebook digest covers: every code cell but the parameters cells
    (``number`` counts the notebook's code cells from 1, the parameters cell included, as a reader counts them)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    return [(n, c.source) for n, c in enumerate(cells, 1) if not PARAMETER_TAGS & set(c.metadata.get("tags", []))]


def _read(path: str | Path):
    """The notebook at ``path``, read once per version of the file (verify checks hundreds of reports against the
    same notebook)."""
    path = Path(path)
    stat = path.stat()
    return _read_version(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _read_version(path: str, mtime_ns: int, size: int):
    import nbformat  # lazy: only a report's writing and verify read notebooks

    return nbformat.read(path, as_version=4)


def notebook_digest(path: str | Path) -> str:
    """Digest of a notebook's code (:func:`code_cells`: sources only), not of its parameters cell, Markdown, outputs
    or metadata: a student's folder's copy, with its own parameters, questions and answers, digests as the
    toolkit's notebook does."""
    return digest([source for _, source in code_cells(_read(path))])


def answers_digest(path: str | Path) -> str | None:
    """Digest of a notebook's answers (:func:`answer_sources`), None when it has no answer cell."""
    answers = answer_sources(_read(path))
    return digest(answers) if answers else None


def running_notebook(default: str | Path | None) -> Path | None:
    """The notebook this kernel runs: ``$HELPERS_NOTEBOOK`` (set by ``run``), else the one JupyterLab names in
    ``$JPY_SESSION_NAME``, else ``default`` (the toolkit's notebook of the section)."""
    for name in (NOTEBOOK_ENV, "JPY_SESSION_NAME"):
        path = Path(os.environ.get(name) or "").expanduser()
        if path.suffix == ".ipynb" and path.is_file():
            return path
    return Path(default) if default else None


def fashion_mnist_digest(files: dict) -> str:
    """Digest of the four Fashion-MNIST files :func:`helpers.data.fashion.find_data` found, over their decoded contents
    (:func:`helpers.data.fashion.contents_md5`): the same for .gz or raw files, Zalando's or Debian's compression."""
    return digest(contents_md5(files))


def folder_digest(root: str | Path) -> str | None:
    """Digest of every file of a folder (an image-folder data set): names and bytes, in path order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def source_digest(source: str | Path | None) -> str | None:
    """Digest of the data a report read: :func:`fashion_mnist_digest` of a folder holding the four IDX files,
    else :func:`folder_digest`. Computed where the report runs, from the folder it read."""
    if not source:
        return None
    try:
        return fashion_mnist_digest(find_data(source))
    except (DataNotFoundError, OSError, ValueError, EOFError):
        return folder_digest(source)


# What a report made from the real Fashion-MNIST records as its data digest, whichever copy it read.
FASHION_MNIST_DIGEST = digest({stem: md5["idx"] for stem, md5 in FASHION_MNIST_MD5.items()})


def parameters_digest(parameters: dict | None, volatile=frozenset()) -> str:
    """Digest of a report's parameters without the volatile ones (its output folder, ...)."""
    drop = VOLATILE | frozenset(volatile)
    return digest({k: v for k, v in (parameters or {}).items() if k not in drop})


def fingerprint(payload: dict, *, notebook: str | Path | None, volatile=frozenset()) -> dict:
    """The fingerprint of a JSON-ready ``metrics.json`` payload (see the module docstring); ``volatile`` the keys
    its section adds to :data:`VOLATILE` (:attr:`helpers.engine.config.Section.volatile`)."""
    notebook = running_notebook(notebook)
    ran = notebook is not None and notebook.exists()
    parts = {"parameters": parameters_digest(payload.get("parameters"), volatile),
             "notebook": notebook_digest(notebook) if ran else None,
             "data": source_digest((payload.get("data") or {}).get("source")),
             "results": digest(stable(payload, volatile))}
    answers = answers_digest(notebook) if ran else None
    if answers:  # a course notebook's: a toolkit report's fingerprint keeps its four parts
        parts["answers"] = answers
    parts["short"] = digest(parts)[:12]
    return parts


def differences(a, b, path: str = "", *, tolerance: float = 0.0,
                volatile=frozenset()) -> list[tuple[str, object, object]]:
    """Every number or value that differs between two ``metrics.json`` contents (:data:`VOLATILE` keys and the
    section's own ``volatile`` ones aside): ``(path, a value, b value)``. Numbers within ``tolerance`` (relative,
    or absolute near zero) are equal."""
    drop = VOLATILE | frozenset(volatile)
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in drop
                for d in differences(a.get(k), b.get(k), f"{path}.{k}" if path else k, tolerance=tolerance,
                                     volatile=drop)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path, f"{len(a)} items", f"{len(b)} items")]
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in differences(x, y, f"{path}[{i}]", tolerance=tolerance, volatile=drop)]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers and (a == b or math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)):
        return []
    return [] if a == b else [(path, a, b)]


def check_fingerprint(metrics: dict, *, notebook: str | Path, volatile=frozenset(),
                      executed: str | Path | None = None) -> list[str]:
    """Problems found without rerunning: no fingerprint, or one that does not match the parameters, the notebook
    (the toolkit's own, ``notebook``), the results or its own parts; with the report's ``executed`` notebook
    (``<section>.ipynb`` beside its metrics.json), the code cells that differ from the toolkit's are named and
    answers edited after the run are named as such.

    A fingerprint catches numbers edited by hand and a notebook changed since; it is no seal. Its recipe is in
    this file, so whoever edits a number can compute the digests again: only the rerun and the page's
    comparison with it catch that (no digest can, without a secret the student does not have). ``volatile``: the
    keys the report's section adds to :data:`VOLATILE`."""
    fp = metrics.get("fingerprint")
    if not isinstance(fp, dict) or not fp:
        return ["no fingerprint: metrics.json does not record what it was made from (removed, or made by a toolkit "
                "from before fingerprints)"]
    missing = [k for k in ("parameters", "notebook", "data", "results", "short") if not fp.get(k)]
    if missing:
        return [f"the fingerprint lacks {', '.join(missing)}: it was edited, or made by another version of the toolkit"]
    problems = []
    if parameters_digest(metrics.get("parameters"), volatile) != fp["parameters"]:
        problems.append(f"the parameters were changed after the run: they no longer match the fingerprint "
                        f"{fp['parameters']}")
    if digest(stable(metrics, volatile)) != fp["results"]:
        problems.append("metrics.json was changed after the run: its numbers no longer match the results "
                        f"fingerprint {fp['results']}")
    now = notebook_digest(notebook) if Path(notebook).exists() else None
    if now != fp["notebook"]:
        problems.append(f"the notebook {Path(notebook).name} was changed after the run, or the report was made with "
                        f"another version of it (fingerprint {fp['notebook']}, this toolkit's {now})"
                        + changed_code(executed, notebook))
    elif edited := changed_code(executed, notebook):
        # the run was the toolkit's, but the executed notebook (what the pages and the hand-in PDF show) was not
        # left as it ran
        problems.append(f"{Path(executed).name} was edited after the run{edited}")
    problems += answer_problems(fp, executed)
    parts = ("parameters", "notebook", "data", "results") + (("answers",) if "answers" in fp else ())
    if digest({k: fp[k] for k in parts})[:12] != fp["short"]:
        problems.append(f"fingerprint.short {fp['short']!r} is not the digest of the fingerprint's parts")
    return problems


def changed_code(executed: str | Path | None, notebook: str | Path) -> str:
    """``: code cell N (…) differs from the toolkit's`` for each code cell of the report's ``executed`` notebook
    that is not the toolkit's ``notebook``'s; empty without an executed notebook to compare."""
    if not executed or not Path(executed).is_file() or not Path(notebook).is_file():
        return ""
    try:
        mine, theirs = code_cells(_read(executed)), dict(code_cells(_read(notebook)))
    except (OSError, ValueError) as exc:
        return f" ({Path(executed).name} cannot be read: {exc})"
    changed = [f"code cell {n} ({source.strip()[:40]!r})" for n, source in mine if theirs.get(n) != source]
    changed += [f"code cell {n} (missing)" for n in sorted(set(theirs) - {n for n, _ in mine})]
    return f": {', '.join(changed[:5])} differ{'s' if len(changed) == 1 else ''} from the toolkit's" if changed else ""


def answer_problems(fp: dict, executed: str | Path | None) -> list[str]:
    """Answers in the report's ``executed`` notebook that are not those the run digested (written or changed after
    it), named apart from code; nothing when the run had no answers or there is no executed notebook."""
    if "answers" not in fp or not executed or not Path(executed).is_file():
        return []
    try:
        now = answers_digest(executed)
    except (OSError, ValueError) as exc:
        return [f"the answers cannot be read from {Path(executed).name}: {exc}"]
    if now == fp["answers"]:
        return []
    return [f"the answers were edited after the run: {Path(executed).name}'s answers no longer match the fingerprint "
            f"{fp['answers']} (run the section again, `fashion-report run`, to make its report with them)"]
