"""One line of a student's feedback: a check, whether it passed, and why; and the record of a graded hand-in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Line:
    """One check's verdict: ``ok`` True (passed), False (failed: ``flag`` is the short reason for the grade sheet)
    or None (not checked, or only a note); ``text`` says what was compared and found."""

    check: str
    ok: bool | None
    text: str
    flag: str = ""

    def as_dict(self) -> dict:
        """The line as JSON-ready data."""
        return {"check": self.check, "ok": self.ok, "text": self.text, "flag": self.flag}


def passed(check: str, text: str) -> Line:
    """A check that passed."""
    return Line(check, True, text)


def failed(check: str, text: str, flag: str) -> Line:
    """A check that failed, with the short reason the grade sheet shows."""
    return Line(check, False, text, flag)


def note(check: str, text: str) -> Line:
    """A line that neither passes nor fails (not checked, and why; or a measurement)."""
    return Line(check, None, text)


@dataclass
class Graded:
    """Everything known of one student after ``check``: who, which hand-in, the feedback lines, the points per
    criterion, the flags, and the summary numbers the class page draws."""

    name: str
    id: str
    handin: str = ""  # the hand-in's file or folder name ("" when none was found)
    digest: str = ""
    status: str = "checked"  # checked | missing | broken | unknown student
    variant: dict = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)
    points: dict = field(default_factory=dict)  # criterion id -> points (None: for the grader)
    accuracy: dict = field(default_factory=dict)  # section -> best test accuracy
    reports: dict = field(default_factory=dict)  # section -> path of its HTML inside the unpacked copy
    rerun: dict = field(default_factory=dict)  # what the rerun did, if any

    @property
    def flags(self) -> list[str]:
        """The failed checks' short reasons, each once, in order."""
        return list(dict.fromkeys(line.flag for line in self.lines if line.ok is False and line.flag))

    def as_dict(self) -> dict:
        """The record as JSON-ready data (the state file keeps it between runs)."""
        return {"name": self.name, "id": self.id, "handin": self.handin, "digest": self.digest, "status": self.status,
                "variant": self.variant, "lines": [x.as_dict() for x in self.lines], "points": self.points,
                "accuracy": self.accuracy, "reports": self.reports, "rerun": self.rerun}

    @classmethod
    def from_dict(cls, data: dict) -> Graded:
        """The record :meth:`as_dict` wrote."""
        out = cls(**{k: v for k, v in data.items() if k != "lines"})
        out.lines = [Line(**x) for x in data.get("lines", [])]
        return out
