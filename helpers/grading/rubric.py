"""The rubric as data: criteria with points, from the assignment's ``rubric`` block or a ``rubric.yaml``.

Each criterion has an ``id``, a ``kind``, ``points`` and perhaps ``hidden: true`` (counted, never shown to the
student). The kinds, and how each earns its points (partial credit where the criterion has parts):

``sections_present``         each named section there, finished and in the assignment's profile: its share
``questions_answered``       each question answered in at least ``min_words`` words: its share
``test_accuracy``            ``section``'s test accuracy at least ``at_least``; with ``from`` a linear share
                             between ``from`` and ``at_least``
``comparison``               each section compares at least ``min_configurations`` configurations: its share
``verify_passed``            every integrity check (digests, fingerprint, page, arithmetic, data, rerun) passed
``no_similarity_flag``       no similarity pair names the student; where one does, the cell is left empty for
                             the grader (a pair names the copied student too: a flag is read, not a verdict),
                             and ``check`` keeps what the grader writes there
``parameters_match_variant`` the runs used the student's assignment and variant
``hand_graded``              one empty column per question in ``questions`` (its points from the assignment),
                             for the grader; ``check`` keeps what the grader wrote there
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helpers.grading.lines import Graded
from helpers.textfiles import PARAMETER_SET, InputError, check, compose, construct, read_text

KINDS = ("sections_present", "questions_answered", "test_accuracy", "comparison", "verify_passed",
         "no_similarity_flag", "parameters_match_variant", "hand_graded")
INTEGRITY = ("files", "fingerprint", "page", "pdf", "answers", "arithmetic", "data", "hand-in", "rerun", "timings")
# the criteria whose points a flag leaves to the grader instead of deciding them
GRADER_DECIDES = ("no_similarity_flag",)
# the checks whose lines a hidden criterion hides from the student's feedback
HIDES = {"parameters_match_variant": ("parameters",), "no_similarity_flag": ("similarity",),
         "verify_passed": INTEGRITY}


@dataclass
class Criterion:
    """One rubric criterion (see the module docstring)."""

    id: str
    kind: str
    points: float
    hidden: bool = False
    options: dict = field(default_factory=dict)


@dataclass
class Rubric:
    """The criteria, and the hand-graded columns (question id -> its points)."""

    criteria: list[Criterion]
    hand: dict[str, float] = field(default_factory=dict)

    @property
    def auto(self) -> list[Criterion]:
        """The criteria ``check`` scores itself."""
        return [c for c in self.criteria if c.kind != "hand_graded"]

    @property
    def total(self) -> float:
        """The most points a student can get."""
        return sum(c.points for c in self.auto) + sum(self.hand.values())

    def hidden_checks(self) -> set[str]:
        """The feedback checks no student sees (those of hidden criteria)."""
        return {check for c in self.criteria if c.hidden for check in HIDES.get(c.kind, ())}


def parse_rubric(data, questions: list) -> Rubric:
    """A rubric from its YAML data (``{criteria: [...]}`` or the list itself); ``questions``: the assignment's
    (their points fill a hand-graded column). Raises :class:`~helpers.textfiles.InputError` by name."""
    items = data.get("criteria") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise InputError("rubric: a list of criteria is expected (rubric: {criteria: [{id, kind, points}, ...]})")
    points_of = {getattr(q, "id", None) or q.get("id"): getattr(q, "points", None) or q.get("points", 0)
                 for q in questions}
    criteria, hand, seen = [], {}, set()
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or item.get("kind") not in KINDS:
            raise InputError(f"rubric criterion {i}: kind {item.get('kind') if isinstance(item, dict) else item!r} "
                             f"is not one of {', '.join(KINDS)}")
        cid = str(item.get("id") or item["kind"])
        if cid in seen:
            raise InputError(f"rubric criterion {i}: id {cid!r} is used twice")
        seen.add(cid)
        try:
            points = float(item.get("points", 0))
        except (TypeError, ValueError):
            raise InputError(f"rubric criterion {cid}: points {item.get('points')!r} is not a number") from None
        options = {k: v for k, v in item.items() if k not in ("id", "kind", "points", "hidden")}
        criteria.append(Criterion(cid, item["kind"], points, bool(item.get("hidden")), options))
        if item["kind"] == "hand_graded":
            for q in options.get("questions") or list(points_of):
                hand[str(q)] = float(points_of.get(q) or 0)
    return Rubric(criteria, hand)


def _share(parts: list[bool]) -> float:
    return sum(parts) / len(parts) if parts else 0.0


def score(c: Criterion, g: Graded, facts: dict) -> float | None:
    """The points criterion ``c`` gives ``g`` (none to a hand-in missing, unreadable or not on the roster; None:
    for the grader to decide).
    ``facts``: what the checks found that the lines do not carry
    (``sections``: section -> {finished, profile_ok, configurations}; ``answers``: question -> words;
    ``questions``: the assignment's question ids; ``similar``: whether a pair names the student)."""
    sections = facts.get("sections", {})
    if g.status != "checked":
        return 0.0
    if c.kind == "sections_present":
        wanted = c.options.get("sections") or list(sections) or []
        return c.points * _share([bool(sections.get(s, {}).get("finished") and sections[s].get("profile_ok"))
                                  for s in wanted])
    if c.kind == "questions_answered":
        need = int(c.options.get("min_words", 1))
        return c.points * _share([facts.get("answers", {}).get(q, 0) >= need for q in facts.get("questions", [])])
    if c.kind == "test_accuracy":
        acc = g.accuracy.get(c.options.get("section"))
        top, low = float(c.options.get("at_least", 0)), c.options.get("from")
        if acc is None:
            return 0.0
        if acc >= top:
            return c.points
        return c.points * max(0.0, (acc - float(low)) / (top - float(low))) if low is not None and top > low else 0.0
    if c.kind == "comparison":
        need = int(c.options.get("min_configurations", 2))
        return c.points * _share([s.get("configurations", 0) >= need for s in sections.values()])
    if c.kind == "verify_passed":
        bad = [x for x in g.lines if x.check in INTEGRITY and x.ok is False]
        return 0.0 if bad or g.status != "checked" else c.points
    if c.kind == "no_similarity_flag":
        return None if facts.get("similar") else c.points
    if c.kind == "parameters_match_variant":
        ok = [x.ok for x in g.lines if x.check in ("parameters", "identity")]
        return c.points if ok and all(ok) else 0.0
    return 0.0


def apply(rubric: Rubric, g: Graded, facts: dict) -> None:
    """Fill ``g.points`` for every criterion ``check`` scores (rounded to 0.01; None where the grader decides)."""
    g.points = {c.id: None if (v := score(c, g, facts)) is None else round(v, 2) for c in rubric.auto}


def load_rubric(path, questions: list) -> Rubric:
    """A ``rubric.yaml`` (``--rubric``), read within the project's bounds (:mod:`helpers.textfiles`)."""
    source = f"rubric {path}"
    text = read_text(path, what="rubric", limit=2 * 2**20)
    node = compose(text, source)
    if node is None:
        raise InputError(f"{source} is empty")
    check(node, source, PARAMETER_SET)
    data = construct(node)
    return parse_rubric(data.get("rubric", data) if isinstance(data, dict) else data, questions)
