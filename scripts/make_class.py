"""Make a class of hand-ins to grade (``fashion-report check``'s test class): a small assignment, a roster of N
students, ``students.csv`` from ``assign``, and one hand-in per student in ``OUT/handins/``.

Only one student per variant really runs (``start``, answers written into the answer cells, ``run``, ``handin``:
the student's whole path, in ``smoke``). Every other student gets that run re-stamped with their own name, id and
answers, every digest recomputed as ``run`` and ``handin`` compute them (the same numbers as an honest run of that
variant would give: same parameters, same seed). Then the cases a grader must catch are made by hand:

* ``copied``: a student hands in another's hand-in (another variant) under their own name, the parameters edited to
  their own variant and every digest recomputed;
* ``html``: a student's page shows another test accuracy than its metrics.json (the manifest recomputed);
* ``variant``: a student ran another variant than the one assigned (an honest run of the wrong variant);
* ``matrix``: a student's confusion matrix made up (fingerprint and manifest recomputed);
* ``missing``: a hand-in without its CNN section;
* ``broken``: an archive cut short.

Usage: ``python scripts/make_class.py OUT [--students 30]``. The real runs are kept in ``OUT/base/`` (one zip per
variant) and reused by a later call into the same ``OUT``: ``--students 300`` then makes a class of 300 in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers.course.roster import read_roster
from helpers.reporting.fingerprint import digest, parameters_digest, stable
from helpers.sections import SECTIONS

ASSIGNMENT = """\
# The grading demo's assignment: two sections in smoke, one variant axis (the initialisation) so that one real run
# per variant is three runs; a rubric with every kind of criterion `check` scores.
id: grading-demo
title: "Grading demo: MLP and CNN"
profile: smoke
sections:
  mlp:
    grid: {optimizer: [adam, rmsprop]}
    hidden_sizes: [64]
    activation: relu
  cnn:
    grid: {norm: [batch_norm, dropout]}
    search: [{conv_dropout: 0.1, dense_dropout: 0.3, dense: [64]}]
    optimizer: adam
variants:
  init: [xavier, he, normal]
questions:
  - id: q1
    title: "Adam or RMSprop?"
    text: "Which optimizer reached the higher validation accuracy, and by how much?"
    points: 4
    section: mlp
    after: "The grid"
  - id: q2
    title: "Batch normalisation or dropout"
    text: "Which normalisation did better in the first comparison, and is the difference larger than noise?"
    points: 4
    section: cnn
    after: "The first comparison"
rubric:
  criteria:
    - {id: sections-present, kind: sections_present, sections: [mlp, cnn], points: 4}
    - {id: questions-answered, kind: questions_answered, min_words: 20, points: 2}
    - {id: mlp-accuracy, kind: test_accuracy, section: mlp, at_least: 0.3, points: 2}
    - {id: comparison, kind: comparison, min_configurations: 2, points: 2}
    - {id: verify, kind: verify_passed, points: 4}
    - {id: similarity, kind: no_similarity_flag, points: 2}
    - {id: own-variant, kind: parameters_match_variant, hidden: true, points: 2}
    - {id: written, kind: hand_graded, questions: [q1, q2], points: 8}
"""
WORDS = ("accuracy adam rmsprop validation loss epoch learning rate curve optimizer batch dropout normalisation "
         "pooling kernel filter layer hidden unit gradient noise seed spread model test train image class shirt coat "
         "pullover sneaker boot bag trouser dress sandal better worse higher lower faster slower because therefore "
         "however while since although overfitting underfitting regularisation momentum step small large first "
         "second third last run repeat difference margin chance level signal variance bias network convolution "
         "feature map activation relu tanh xavier normal he initialisation weight decay schedule cosine warm stable "
         "unstable converge diverge plateau peak drop rise stays reaches shows suggests means indicates compare "
         "table figure row column value number percent point half quarter whole mostly rarely often").split()
QUESTION_SECTION = {"q1": "mlp", "q2": "cnn"}
SPECIAL = {"copied": 3, "html": 5, "variant": 7, "matrix": 9, "missing": 11, "broken": 13}


def answer_text(seed: str, words: int = 45) -> str:
    """An answer no other student writes: words drawn with the student's own seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def sh(*args: str, cwd: Path | None = None) -> None:
    """Run the toolkit's command line; stop the script when it fails."""
    cmd = [sys.executable, "-m", "helpers", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=cwd)


def write_answers(folder: Path, answers: dict[str, str]) -> None:
    """Write each answer into its answer cell of the folder's notebooks (as a student would in JupyterLab)."""
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            meta = cell.get("metadata") or {}
            if "answer" in meta.get("tags", []) and meta.get("question", {}).get("id") in answers:
                cell["source"] = answers[meta["question"]["id"]]
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def base_handin(out: Path, student, questions: list[str]) -> Path:
    """One real hand-in: ``start``, answers, ``run``, ``handin``."""
    folder = out / "work" / student.id
    zip_path = out / "base" / f"{student.cells['init']}.zip"
    if zip_path.exists():
        return zip_path
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    sh("start", str(out / "assignment.yaml"), "--roster", str(out / "students.csv"), "--id", student.id, "-o",
       str(folder), "--force")
    write_answers(folder, {q: answer_text(f"{student.id}:{q}") for q in questions})
    sh("run", "--folder", str(folder))
    sh("handin", "--folder", str(folder), "-o", str(zip_path))
    return zip_path


def read_zip(path: Path) -> dict[str, bytes]:
    """An archive's members."""
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    """Write members as ``handin`` does (the manifest's digests recomputed first)."""
    manifest = json.loads(files["handin.json"])
    manifest["files"] = {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items()) if p != "handin.json"}
    files = {**files, "handin.json": json.dumps(manifest, indent=1, ensure_ascii=False).encode()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())


def refingerprint(metrics: dict, answers: dict[str, str] | None = None) -> None:
    """Recompute a metrics.json's fingerprint after an edit, as the run computes it (``answers``: the section's
    questions' answers the run had)."""
    vol = SECTIONS[metrics["section"]].volatile
    fp = metrics["fingerprint"]
    fp["parameters"] = parameters_digest(metrics["parameters"], vol)
    fp["results"] = digest(stable(metrics, vol))
    if answers is not None and "answers" in fp:
        fp["answers"] = digest(answers)
    parts = ("parameters", "notebook", "data", "results") + (("answers",) if "answers" in fp else ())
    fp["short"] = digest({k: fp[k] for k in parts})[:12]


def restamp(files: dict[str, bytes], student, answers: dict[str, str] | None, variant: dict | None = None) -> dict:
    """A hand-in's members with another student's name, id, answers (and parameters of ``variant``)."""
    files = dict(files)
    course = json.loads(files["course.json"])
    old = course["student"]
    course["student"] = {"name": student.name, "id": student.id}
    files["course.json"] = json.dumps(course, indent=1, ensure_ascii=False).encode()
    manifest = json.loads(files["handin.json"])
    manifest["student"] = {"name": student.name, "id": student.id}
    files["handin.json"] = json.dumps(manifest).encode()
    if answers is not None:
        files["answers.json"] = json.dumps(answers, indent=1, ensure_ascii=False).encode()
    for name in [n for n in files if n.endswith("/metrics.json")]:
        m = json.loads(files[name])
        before, was = dict(m["fingerprint"]), dict(m["parameters"])
        m["parameters"].update(author_name=student.name, author_id=student.id, **(variant or {}))
        own = None if answers is None else {q: a for q, a in answers.items() if QUESTION_SECTION[q] == m["section"]}
        refingerprint(m, own)
        files[name] = json.dumps(m, indent=1).encode()
        swaps = [(html.escape(old["name"]), html.escape(student.name)), (old["id"], student.id)]
        swaps += [(before[k], m["fingerprint"][k]) for k in ("short", "parameters", "results", "answers")
                  if k in before]
        for k, v in (variant or {}).items():  # the parameters cell and the text naming the variant
            swaps += [(f'{k}</span> <span class="o">=</span> <span class="s2">"{was[k]}"',
                       f'{k}</span> <span class="o">=</span> <span class="s2">"{v}"'),
                      (f"{k} <code>{was[k]}</code>", f"{k} <code>{v}</code>")]
            text = files[name.replace("metrics.json", f"{m['section']}.html")].decode()
            row = re.search(rf"parameter {k}</th>\s*<td[^>]*>'{re.escape(str(was[k]))}'</td>", text)
            if row:  # the appendix's row of the parameter
                swaps.append((row[0], row[0].replace(f"'{was[k]}'", f"'{v}'")))
        page = name.replace("metrics.json", f"{m['section']}.html")
        text = files[page].decode()
        for a, b in swaps:
            text = text.replace(a, b)
        files[page] = text.encode()
    return files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--students", type=int, default=30)
    args = p.parse_args(argv)
    out = args.out.resolve()
    (out / "handins").mkdir(parents=True, exist_ok=True)
    if not (out / "assignment.yaml").exists():  # the real runs of an earlier call were made from this file
        (out / "assignment.yaml").write_text(ASSIGNMENT, encoding="utf-8")
    rows = ["name,id"] + [f"Student {i + 1:02d},{2026001 + i}" for i in range(args.students)]
    (out / "roster.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sh("assign", str(out / "roster.csv"), str(out / "assignment.yaml"), "-o", str(out / "students.csv"))
    students = read_roster(out / "students.csv")
    questions = ["q1", "q2"]
    bases = {}
    for s in students:
        if s.cells["init"] not in bases:
            bases[s.cells["init"]] = read_zip(base_handin(out, s, questions))
    made = make_handins(out, students, bases, questions)
    print(f"{made} hand-ins in {out / 'handins'}; special cases: {SPECIAL}")
    return 0


def make_handins(out: Path, students: list, bases: dict, questions: list[str]) -> int:
    """Write every student's hand-in, the special cases among them."""
    special = {i: case for case, i in SPECIAL.items()}
    for i, s in enumerate(students):
        answers = {q: answer_text(f"{s.id}:{q}") for q in questions}
        target = out / "handins" / f"handin-{s.id}.zip"
        case = special.get(i)
        if case == "copied":
            source = next(t for t in students if t.cells["init"] != s.cells["init"])
            files = restamp(bases[source.cells["init"]], s, {q: answer_text(f"{source.id}:{q}") for q in questions},
                            variant={"init": s.cells["init"]})
        elif case == "variant":
            other = next(v for v in bases if v != s.cells["init"])
            files = restamp(bases[other], s, answers)
        else:
            files = restamp(bases[s.cells["init"]], s, answers)
        files = edit(case, files)
        if case == "broken":
            write_zip(target, files)
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
            continue
        write_zip(target, files)
    return len(students)


def edit(case: str | None, files: dict) -> dict:
    """The hand edits of the special cases."""
    files = dict(files)
    if case == "html":
        m = json.loads(files["cnn/metrics.json"])
        acc = m["best"]["test"]["accuracy"]
        text = files["cnn/cnn.html"].decode()
        files["cnn/cnn.html"] = text.replace(f"test accuracy <strong>{acc:.2%}</strong>",
                                             f"test accuracy <strong>{acc + 0.05:.2%}</strong>").encode()
    elif case == "matrix":
        m = json.loads(files["mlp/metrics.json"])
        cm = m["best"]["test"]["confusion_matrix"]
        n = len(cm)
        m["best"]["test"]["confusion_matrix"] = [[18 if i == j else (1 if j == (i + 1) % n else 0) for j in range(n)]
                                                 for i in range(n)]
        before = dict(m["fingerprint"])
        refingerprint(m)  # a careful forger: the digests and the page's appendix agree with the edit
        files["mlp/metrics.json"] = json.dumps(m, indent=1).encode()
        text = files["mlp/mlp.html"].decode()
        for k in ("short", "results"):
            text = text.replace(before[k], m["fingerprint"][k])
        files["mlp/mlp.html"] = text.encode()
    elif case == "missing":
        files = {k: v for k, v in files.items() if not k.startswith("cnn/")}
        manifest = json.loads(files["handin.json"])
        manifest["sections"] = ["mlp"]
        files["handin.json"] = json.dumps(manifest).encode()
    return files


if __name__ == "__main__":
    sys.exit(main())
