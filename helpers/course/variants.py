"""Which variant of an assignment each student gets: a rule anyone can apply from the student's id alone, and the
balancing an instructor's ``assign`` adds over a whole roster.

The rule (:func:`variant_for`): the axes in file order have sizes k1..kn; a student id that is a decimal integer is
its number n, any other id the first 16 hex digits of SHA-256("<assignment id>:<student id>"); axis j takes value
``((n + salt) // (k1 * ... * k(j-1))) % kj``, salt coming from the SHA-256 of the assignment id. Consecutive roll
numbers therefore walk through every combination of the axes, and the first axis of any k1 * m consecutive ids is
shared exactly equally. Later axes of a roster that is not a whole number of cycles, and rosters of ids that are
not consecutive, can be uneven: :func:`balance` then moves the fewest students (never one whose value the roster
pins) so that every value of every axis has an equal share ±1.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence

DIGITS = frozenset("0123456789")


def sha_int(text: str) -> int:
    """The first 16 hex digits of the SHA-256 of ``text`` (UTF-8), as an integer."""
    return int(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16)


def student_number(assignment_id: str, student_id) -> int:
    """The number the rule starts from: the id itself when it is a decimal integer (``0042`` is 42), else a hash of
    the assignment and the id."""
    sid = str(student_id).strip()
    return int(sid) if sid and set(sid) <= DIGITS else sha_int(f"{assignment_id}:{sid}")


def rule_indices(assignment_id: str, sizes: Sequence[int], student_id) -> list[int]:
    """The index of the value of each axis (sizes ``sizes``) the rule gives ``student_id``."""
    n = student_number(assignment_id, student_id) + sha_int(assignment_id)
    return [(n // math.prod(sizes[:j])) % k for j, k in enumerate(sizes)]


def variant_for(assignment, student_id) -> dict:
    """The variant ``{axis: value}`` the rule gives ``student_id`` for ``assignment`` (an object with ``id`` and
    ``variants``, the axes in file order). A pure function: the same on every machine, for every run."""
    axes = list(assignment.variants)
    sizes = [len(assignment.variants[a]) for a in axes]
    indices = rule_indices(assignment.id, sizes, student_id)
    return {a: assignment.variants[a][i] for a, i in zip(axes, indices)}


def targets(counts: list[int], pinned: list[int]) -> list[int]:
    """How many students each value of one axis should have: ``total // k`` or one more, the extra ones going to
    the values holding most students already (fewest moves; ties to the earlier value), never fewer than the
    students pinned to a value."""
    total, k = sum(counts), len(counts)
    order = sorted(range(k), key=lambda v: (-counts[v], v))
    want = [total // k] * k
    for v in order[:total % k]:
        want[v] += 1
    return [max(w, p) for w, p in zip(want, pinned)]


def balance(assignment_id: str, axes: Mapping[str, int], ids: Sequence[str], indices: list[list[int]],
            pins: list[set[int]]) -> tuple[list[list[int]], list[str]]:
    """Rebalance a roster's variant indices (``indices[i][j]``: student i, axis j) so that every value of every axis
    has an equal share ±1, moving the fewest students on each axis and, among those, students already moved on an
    earlier axis first (so fewer students differ from the rule). ``pins[i]`` holds the axes whose value student i's
    roster row fixes: never moved. Which students move depends on their ids, not on the roster's row order.

    ``axes`` maps each axis, in file order, to its number of values. Returns (new indices, warnings); a warning
    names an axis whose pins make ±1 impossible."""
    out = [list(row) for row in indices]
    moved: set[int] = set()
    warnings = []
    rank = {i: sha_int(f"{assignment_id}:balance:{ids[i]}") for i in range(len(ids))}
    for j, (axis, k) in enumerate(axes.items()):
        counts = [sum(1 for row in out if row[j] == v) for v in range(k)]
        pinned = [sum(1 for i, row in enumerate(out) if row[j] == v and j in pins[i]) for v in range(k)]
        want = targets(counts, pinned)
        if sum(want) > len(out):
            warnings.append(f"{axis}: the roster pins {max(pinned)} students to one value, more than an equal "
                            f"share ({len(out) // k} or {len(out) // k + 1}); the other values are balanced as "
                            "far as the unpinned students allow")
        deficit = [max(w - c, 0) for w, c in zip(want, counts)]
        for v in range(k):
            excess = counts[v] - want[v]
            if excess <= 0:
                continue
            movable = sorted((i for i, row in enumerate(out) if row[j] == v and j not in pins[i]),
                             key=lambda i: (i not in moved, rank[i], ids[i]))
            for i in movable[:excess]:
                if not any(deficit):
                    break
                to = max(range(k), key=lambda u: (deficit[u], -u))
                out[i][j], deficit[to] = to, deficit[to] - 1
                moved.add(i)
    return out, warnings


def shares(values: Sequence, chosen: Sequence) -> dict[str, int]:
    """How many of ``chosen`` hold each of ``values`` (text as is, other values as JSON, in ``values``' order)."""
    def key(v):
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    counts = {key(v): 0 for v in values}
    for c in chosen:
        counts[key(c)] += 1
    return counts
