"""Hand-ins too alike to be independent, each pair with its evidence; a flag is for the grader to read, never a
verdict, and every threshold is a parameter.

* **Results**: two honest runs with different parameters do not give the same learning curves, confusion matrix
  and per-class accuracies. Per section, each hand-in's numbers become one vector (:func:`result_vector`); pairs
  whose assigned parameters for that section differ but whose vectors agree within ``tolerance`` are listed, with
  the numbers that agree. (Students given the same variant get the same numbers from the same seed: expected.)
* **Answers**: shared word n-grams (:func:`shingles`), the question's own text and the student's own report's
  text (the toolkit's observations, which a student may quote) left out, as are n-grams that a large share of the
  class uses (common phrasing). The overlap is the shared share of the shorter answer; each pair lists the
  shared passages.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

WORD = re.compile(r"[\w'’%.]+", re.U)


@dataclass
class Pair:
    """Two hand-ins found alike: ``kind`` "results" or "answers", the section or question, a score and evidence."""

    kind: str
    a: str  # student id
    b: str
    where: str
    score: float
    evidence: list[str] = field(default_factory=list)
    one_sided: bool = False  # only ``a`` is odd (``b`` stands for the many with the usual parameters)

    def as_dict(self) -> dict:
        """The pair as JSON-ready data."""
        return {"kind": self.kind, "a": self.a, "b": self.b, "where": self.where, "score": self.score,
                "evidence": self.evidence, "one_sided": self.one_sided}


def result_vector(metrics: dict) -> tuple[list[float], list[str]]:
    """A report's result numbers in a fixed order (histories' losses and accuracies, the confusion matrix, the
    per-class accuracies) and what each block is."""
    values, parts = [], []
    histories = metrics.get("histories") if isinstance(metrics.get("histories"), dict) else {}
    for name in sorted(histories):
        for epoch in histories[name] if isinstance(histories[name], list) else []:
            for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
                v = epoch.get(key) if isinstance(epoch, dict) else None
                values.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan)
    if histories:
        parts.append(f"learning curves of {len(histories)} configuration(s)")
    test = ((metrics.get("best") or {}).get("test") or {}) if isinstance(metrics.get("best"), dict) else {}
    cm = test.get("confusion_matrix")
    if isinstance(cm, list) and all(isinstance(r, list) for r in cm):
        values += [float(v) if isinstance(v, (int, float)) else np.nan for r in cm for v in r]
        parts.append("the confusion matrix")
    per_class = test.get("per_class_accuracy")
    if isinstance(per_class, dict):
        values += [float(v) if isinstance(v, (int, float)) else np.nan for _, v in sorted(per_class.items())]
        parts.append("the per-class accuracies")
    return values, parts


def result_pairs(items: list[dict], *, tolerance: float = 1e-6, min_values: int = 8) -> list[Pair]:
    """``items``: ``{"id", "section", "assigned" (that section's recorded parameters), "vector", "parts"}``.

    Hand-ins whose vectors agree within ``tolerance`` (absolute, every number) form a group. Honest runs of one
    configuration agree (same parameters, same seed); a group holding other parameters too is impossible for
    honest runs: each hand-in whose parameters are not the group's most common ones is paired with one that has
    them (``a`` the odd one out; when no parameters are the most common, every pair of the group)."""
    by_shape = defaultdict(list)
    for it in items:
        if len(it["vector"]) >= min_values:
            by_shape[(it["section"], len(it["vector"]))].append(it)
    pairs = []
    for (section, _), group in sorted(by_shape.items()):
        matrix = np.array([g["vector"] for g in group], dtype=float)
        matrix = np.where(np.isnan(matrix), 1e9, matrix)  # a missing number agrees only with a missing number
        parent = list(range(len(group)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(group) - 1):
            for j in np.nonzero(np.abs(matrix[i + 1:] - matrix[i]).max(axis=1) <= tolerance)[0] + i + 1:
                parent[root(int(j))] = root(i)
        clusters = defaultdict(list)
        for i in range(len(group)):
            clusters[root(i)].append(i)
        for members in clusters.values():
            pairs += _odd_ones(section, [group[i] for i in members], matrix.shape[1])
    return pairs


def _odd_ones(section: str, members: list[dict], size: int) -> list[Pair]:
    keys = Counter(_key(m["assigned"]) for m in members)
    if len(keys) < 2:
        return []
    (top, count), (_, second) = keys.most_common(2)
    usual = [m for m in members if _key(m["assigned"]) == top] if count > second else []
    odd = [m for m in members if not usual or _key(m["assigned"]) != top]
    pairs = []
    for m in odd:
        others = usual or [o for o in odd if o is not m and _key(o["assigned"]) != _key(m["assigned"])]
        differ = sorted(k for k in set(m["assigned"]) | set(others[0]["assigned"])
                        if m["assigned"].get(k) != others[0]["assigned"].get(k))
        shown = ", ".join(f"{k} {m['assigned'].get(k)!r} vs {others[0]['assigned'].get(k)!r}" for k in differ[:4])
        pairs.append(Pair("results", m["id"], others[0]["id"], section, 0.0, [
            f"{section}: {', '.join(m['parts'])} ({size} numbers) are those of {len(others)} hand-in(s) run with "
            f"other parameters ({shown}): {', '.join(o['id'] for o in others[:5])}"
            + (" ..." if len(others) > 5 else "")], one_sided=bool(usual)))
    return pairs


def _key(value) -> str:
    return repr(sorted(value.items())) if isinstance(value, dict) else repr(value)


def words(text: str) -> list[str]:
    """An answer's words, lower case, Markdown and punctuation aside."""
    return [w.strip(".'’").lower() for w in WORD.findall(text or "") if w.strip(".'’")]


def shingles(tokens: list[str], n: int, *, only: set[str] | None = None) -> list[int]:
    """The word n-grams of ``tokens`` as 64-bit hashes (CRC-32 and Adler-32 of the n-gram: the same in every
    process, and quick), in order, one per position; with ``only``, just those starting with one of its words
    (0 elsewhere: a page's n-grams are only needed where an answer's could start)."""
    out = []
    for i in range(len(tokens) - n + 1):
        if only is not None and tokens[i] not in only:
            out.append(0)
            continue
        text = " ".join(tokens[i:i + n]).encode()
        out.append((zlib.crc32(text) << 32 | zlib.adler32(text)) or 1)
    return out


def answer_grams(answers: dict[str, str], questions: str, page: str, *, n: int) -> dict[str, list[int]]:
    """Each answer's n-gram hashes in order; those of the questions' text, and those the student's own page
    holds more often than their answers do (the page shows each answer once: what else it holds is the toolkit's
    observations), are 0 (the positions kept, so shared passages can be shown)."""
    ignored = set(shingles(words(questions), n))
    tokens = {q: words(text) for q, text in answers.items()}
    mine = Counter(g for t in tokens.values() for g in shingles(t, n))
    starts = {w for t in tokens.values() for w in t}
    ignored |= {g for g, count in Counter(shingles(words(page), n, only=starts)).items() if count > mine.get(g, 0)}
    return {q: [0 if g in ignored else g for g in shingles(words(text), n)] for q, text in answers.items()}


def answer_pairs(items: list[dict], *, threshold: float = 0.5, n: int = 5, min_shared: int = 4,
                 common: float = 0.2) -> list[Pair]:
    """``items``: ``{"id", "answers": {question: text}, "grams": {question: [hash, ...]}}`` (:func:`answer_grams`).
    Pairs whose answer to one question shares at least ``threshold`` of the shorter answer's n-grams (and at least
    ``min_shared`` of them); n-grams used by more than ``common`` of the class are phrasing, not copying."""
    index: dict[tuple[str, int], set[int]] = defaultdict(set)
    for k, it in enumerate(items):
        for q, grams in it["grams"].items():
            for g in grams:
                if g:
                    index[(q, g)].add(k)
    limit = max(2, int(common * len(items)))
    shared: dict[tuple[int, int, str], int] = defaultdict(int)
    for (q, _), holders in index.items():
        if 2 <= len(holders) <= limit:
            ordered = sorted(holders)
            for x in range(len(ordered)):
                for y in range(x + 1, len(ordered)):
                    shared[(ordered[x], ordered[y], q)] += 1
    pairs = []
    for (i, j, q), count in sorted(shared.items()):
        a = {g for g in items[i]["grams"][q] if g}
        b = {g for g in items[j]["grams"][q] if g}
        score = count / max(1, min(len(a), len(b)))
        if count >= min_shared and score >= threshold:
            pairs.append(Pair("answers", items[i]["id"], items[j]["id"], q, round(score, 3),
                              passages(items[i]["answers"][q], a & b, n)))
    return pairs


def passages(text: str, shared: set[int], n: int, limit: int = 3) -> list[str]:
    """The longest runs of ``text`` made of shared n-grams (at most ``limit``), as quoted text."""
    tokens = words(text)
    grams = shingles(tokens, n)
    runs, start = [], None
    for i, g in enumerate(grams + [0]):
        if g in shared and start is None:
            start = i
        elif g not in shared and start is not None:
            runs.append((start, i - 1 + n))
            start = None
    runs.sort(key=lambda r: r[0] - r[1])
    return [f"“{' '.join(tokens[s:e])[:300]}”" for s, e in runs[:limit]]
