"""``verify`` against hostile hand-ins: it checks what the grader reads (the HTML) and trusts nothing in a hand-in
but its parameters.

One smoke MLP report is made (module fixture) and copies of it are tampered with. Most tests stop before the
rerun (the checks without one already fail the copy) or stand the fixture's own run in for the rerun (it is the
same run: same toolkit notebook, parameters, data and machine); two start real reruns: a forgery whose every digest
was recomputed, caught by the rerun, and a rerun stopped by ``--timeout``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import verify_report
from helpers.cli.runner import notebook_parameters, notebook_path
from helpers.cli.verify_html import parse_page
from helpers.cli.verify_inputs import Reference, rerun_parameters
from helpers.cli.verify_report import verify_folder
from helpers.reporting.fingerprint import FASHION_MNIST_DIGEST, fingerprint, folder_digest, source_digest
from tests.conftest import make_fake_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def handin(mlp_smoke_report):
    """A student's hand-in folder ``<tmp>/ada`` with ``mlp/{metrics.json, mlp.html, mlp.ipynb}`` (the session's
    shared report: tests tamper with copies of it only)."""
    return mlp_smoke_report


def copy(handin: Path, to: Path) -> Path:
    shutil.copytree(handin, to)
    return to


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "mlp" / "metrics.json").read_text())


def write_metrics(folder: Path, metrics: dict, *, refingerprint: bool = False) -> None:
    """Write an edited metrics.json; with ``refingerprint``, its digests computed again, and the page's appendix
    showing them, as a forger would."""
    if refingerprint:
        old = metrics.get("fingerprint") or {}
        metrics = {k: v for k, v in metrics.items() if k != "fingerprint"}
        metrics["fingerprint"] = fingerprint(metrics, notebook=notebook_path("mlp"))
        page = folder / "mlp" / "mlp.html"
        if page.exists():
            text = page.read_text()
            for key, value in old.items():
                text = text.replace(value, metrics["fingerprint"][key]) if value else text
            page.write_text(text)
    (folder / "mlp" / "metrics.json").write_text(json.dumps(metrics))


def edit_page(folder: Path, old: str, new: str) -> None:
    path = folder / "mlp" / "mlp.html"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def verify(folder: Path, fake_data_dir: Path, **options) -> tuple[bool, str]:
    lines: list[str] = []
    ok = verify_folder(folder, log=lines.append, reference_data=fake_data_dir, **options)
    return ok, "\n".join(lines)


@pytest.fixture
def stand_in_rerun(handin, monkeypatch):
    """The fixture's own run as every rerun (no kernel); the parameters each rerun was given are recorded."""
    given: list[dict] = []
    honest = (metrics_of(handin), parse_page((handin / "mlp" / "mlp.html").read_text()), None)

    def run_once(metrics, params, *, no_input, settings):
        given.append(params)
        return honest

    monkeypatch.setattr(verify_report, "_run_once", run_once)
    return given


def accuracy_text(folder: Path) -> str:
    return f"{metrics_of(folder)['best']['test']['accuracy']:.2%}"


# ---- the cases of the issue ----

def test_an_honest_copy_passes_and_the_rerun_reads_the_instructors_data(handin, tmp_path, fake_data_dir,
                                                                        stand_in_rerun):
    instructors = shutil.copytree(fake_data_dir, tmp_path / "instructor-data")  # the same files, elsewhere
    ok, out = verify(copy(handin, tmp_path / "ada"), instructors)
    assert ok, out
    assert re.search(r"^OK .*ada/mlp \(mlp, fingerprint \w{12}\)$", out, re.M)
    assert "mlp.html shows what the rerun's page shows" in out and "ms_per_image_batch1" in out
    assert stand_in_rerun[0]["data_dir"] == str(instructors)  # not the data_dir the hand-in recorded


def test_an_edited_headline_in_the_html_is_named_with_what_metrics_json_says(handin, tmp_path, fake_data_dir):
    folder = copy(handin, tmp_path / "ada")
    shown = accuracy_text(folder)
    edit_page(folder, f"test accuracy <strong>{shown}</strong>", "test accuracy <strong>93.50%</strong>")
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "FAIL" in out
    line = next(x for x in out.splitlines() if "93.50%" in x)
    assert "mlp.html cell [" in line and "headline" in line and "best.test.accuracy = " in line and shown in line


def test_latency_edited_in_the_html_is_named(handin, tmp_path, fake_data_dir):
    folder = copy(handin, tmp_path / "ada")
    shown = f"{metrics_of(folder)['best']['latency']['ms_per_image_batch1']:.2f} ms per image"
    edit_page(folder, shown, "0.0001 ms per image")
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "'latency, batch of 1': shows '0.0001 ms per image'" in out and shown in out


def test_a_consistent_latency_and_timing_forgery_is_implausible_beside_the_rerun(handin, tmp_path, fake_data_dir,
                                                                                stand_in_rerun):
    folder = copy(handin, tmp_path / "ada")
    metrics = metrics_of(folder)
    latency = metrics["best"]["latency"]
    edit_page(folder, f"{latency['ms_per_image_batch1']:.2f} ms per image", "0.00 ms per image")
    latency["ms_per_image_batch1"] = 0.0001

    def half_a_second(obj):
        if isinstance(obj, dict):
            return {k: 0.5 if k.endswith("seconds") and isinstance(v, float) else half_a_second(v)
                    for k, v in obj.items()}
        return [half_a_second(v) for v in obj] if isinstance(obj, list) else obj

    write_metrics(folder, half_a_second(metrics), refingerprint=True)  # timings are no part of the digests
    ok, out = verify(folder, fake_data_dir)
    assert not ok, out
    assert "implausible latency: best.latency.ms_per_image_batch1 is 0.0001 ms/image" in out
    timing = next(x for x in out.splitlines() if "timings:" in x)
    assert "vs rerun" in timing and "seconds" in timing and "(x" in timing


def test_data_from_another_folder_fail_and_its_data_dir_is_never_used(handin, tmp_path, fake_data_dir,
                                                                     stand_in_rerun):
    swapped = tmp_path / "swapped"  # the case: the test files are training images
    make_fake_fashion_mnist(swapped)
    for kind in ("images", "labels"):
        stem = "idx3" if kind == "images" else "idx1"
        shutil.copy(swapped / f"train-{kind}-{stem}-ubyte.gz", swapped / f"t10k-{kind}-{stem}-ubyte.gz")
    folder = copy(handin, tmp_path / "ada")
    metrics = metrics_of(folder)
    metrics["parameters"]["data_dir"] = metrics["data"]["source"] = str(swapped)
    write_metrics(folder, metrics, refingerprint=True)
    assert metrics_of(folder)["fingerprint"]["data"] == source_digest(swapped)
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "not the reference data" in out and not stand_in_rerun
    # by default the data must be the real Fashion-MNIST, whatever folder the instructor has
    ok, out = verify_folder(folder, log=(lines := []).append), "\n".join(lines)
    assert not ok and f"not Fashion-MNIST: their digest is {source_digest(swapped)}" in out
    assert FASHION_MNIST_DIGEST in out


def test_a_removed_or_inconsistent_fingerprint_fails(handin, tmp_path, fake_data_dir):
    removed = copy(handin, tmp_path / "batch" / "removed")
    metrics = metrics_of(removed)
    del metrics["fingerprint"]
    write_metrics(removed, metrics)
    short = copy(handin, tmp_path / "batch" / "short")
    metrics = metrics_of(short)
    metrics["fingerprint"]["short"] = "000000000000"
    write_metrics(short, metrics)
    params = copy(handin, tmp_path / "batch" / "params")
    metrics = metrics_of(params)
    metrics["parameters"]["lr"] = 0.5
    write_metrics(params, metrics)
    ok, out = verify(tmp_path / "batch", fake_data_dir)
    assert not ok and out.count("FAIL") == 3
    assert "no fingerprint" in out and "is not the digest of the fingerprint's parts" in out
    assert "parameters were changed after the run" in out


def forge_accuracy(folder: Path) -> str:
    """The forger's best: test accuracy 93.50% in metrics.json, every digest recomputed, and the page edited to match;
    returns the accuracy the page showed before."""
    shown = accuracy_text(folder)
    metrics = metrics_of(folder)
    metrics["best"]["test"]["accuracy"] = 0.935
    write_metrics(folder, metrics, refingerprint=True)
    edit_page(folder, f"test accuracy <strong>{shown}</strong>", "test accuracy <strong>93.50%</strong>")
    return shown


def test_an_edited_number_with_its_digests_recomputed_fails_beside_the_rerun(handin, tmp_path, fake_data_dir,
                                                                            stand_in_rerun):
    folder = copy(handin, tmp_path / "ada")
    shown = forge_accuracy(folder)
    ok, out = verify(folder, fake_data_dir)
    assert not ok, out
    assert re.search(r"best\.test\.accuracy\s+report\s+0\.935\s+rerun", out)
    assert re.search(rf"headline|93\.50%.*where the rerun shows.*{re.escape(shown)}", out)


def test_each_broken_report_is_one_fail_line_and_the_rest_go_on(handin, tmp_path, fake_data_dir, stand_in_rerun):
    batch = tmp_path / "batch"
    copy(handin, batch / "honest")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(metrics_of(handin)))
    cases = {
        "unknown": json.dumps({"section": "gan", "parameters": {}}),
        "traversal": json.dumps({"section": "../../etc", "parameters": {}}),
        "notjson": "{'section': 'mlp'",
        "types": json.dumps({"section": "mlp", "parameters": ["lr", 1]}),
        "list": json.dumps([1, 2, 3]),
        "latin1": '{"section": "mlp", "author": "Jos\xe9"}'.encode("latin-1"),
        "nested": "[" * 100_000 + "]" * 100_000,
        "digest": json.dumps({"section": "mlp", "parameters": {}, "fingerprint": {"short": ["x"]}}),
    }
    for name, text in cases.items():
        (batch / name / "mlp").mkdir(parents=True)
        path = batch / name / "mlp" / "metrics.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (batch / "huge" / "mlp").mkdir(parents=True)
    with open(batch / "huge" / "mlp" / "metrics.json", "wb") as f:
        f.truncate(200 * 2**20)  # 200 MB (sparse): refused by its size, never read
    (batch / "link" / "mlp").mkdir(parents=True)
    (batch / "link" / "mlp" / "metrics.json").symlink_to(outside)
    (batch / "fifo" / "mlp").mkdir(parents=True)
    os.mkfifo(batch / "fifo" / "mlp" / "metrics.json")  # opening it for reading would wait for ever
    ok, out = verify(batch, fake_data_dir, timeout=60)
    assert not ok
    heads = [x for x in out.splitlines() if x.startswith(("OK", "FAIL"))]
    assert len(heads) == len(cases) + 4 and sum(h.startswith("OK") for h in heads) == 1, out
    for reason in ("names section 'gan'", "names section '../../etc'", "is not JSON", "parameters is a list",
                   "holds a list", "not UTF-8", "nested too deeply", "fingerprint.short is not a digest",
                   "is 200 MB; verify reads at most", "is a symbolic link", "is not a regular file"):
        assert reason in out, reason
    assert "Traceback" not in out


def test_a_missing_html_fails_unless_metrics_only(handin, tmp_path, fake_data_dir, stand_in_rerun):
    folder = copy(handin, tmp_path / "ada")
    (folder / "mlp" / "mlp.html").unlink()
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "no mlp.html: what the grader reads is not checked" in out and not stand_in_rerun
    ok, out = verify(folder, fake_data_dir, metrics_only=True)
    assert ok and "HTML not checked" in out


def test_readme_verify_commands_import_nothing_from_the_hand_in(tmp_path):
    """Run every verify command of the README, exactly as written, inside a hand-in with its own helpers/."""
    commands = [c for c in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
                for c in c.splitlines() if re.search(r"\bverify\b", c)]
    assert commands
    hostile = tmp_path / "handin"
    marker = tmp_path / "student-code-ran"
    (hostile / "helpers").mkdir(parents=True)
    code = f"open({str(marker)!r}, 'a').write('ran')\n"
    (hostile / "helpers" / "__init__.py").write_text(code)
    (hostile / "helpers" / "__main__.py").write_text(code)
    # a hostile report where each command looks: reports/, handins/, a student's folder (hw1/reports/mlp)
    named = [c.split()[c.split().index("verify") + 1] for c in commands]
    for folder in ("reports/mlp", "handins/mlp", *(n for n in named if n.endswith("/mlp"))):
        (hostile / folder).mkdir(parents=True, exist_ok=True)
        (hostile / folder / "metrics.json").write_text('{"section": "gan"}')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(shlex.split(command, comments=True), cwd=hostile, env=env, capture_output=True,
                              text=True, timeout=300)
        assert not marker.exists(), f"{command} ran the hand-in's helpers/"
        assert done.returncode == 1 and "FAIL" in done.stdout and "names section 'gan'" in done.stdout, done.stderr


# ---- a second set: fakes the issue did not list ----

def test_other_page_edits_are_each_named(handin, tmp_path, fake_data_dir):
    base = metrics_of(handin)
    best = base["best"]["name"]
    other = next(c["name"] for c in base["configurations"] if c["name"] != best)
    report = base["best"]["test"]["classification_report"]
    label = next(iter(report))
    row = next(c for c in base["configurations"] if c["name"] == best)
    edits = {
        "name": (f"<strong>{best}</strong>: test accuracy", f"<strong>{other}</strong>: test accuracy",
                 f"best configuration '{other}'"),
        "script": ("</body>", "<script>document.body.innerHTML='93.50%'</script></body>", "<script> element"),
        "onerror": ("<main", '<img src="x" onerror="alert(1)"><main', "event handler onerror="),
        "file": ("<main", '<img src="file:///etc/passwd"><main', "file:///etc/passwd"),
        "hidden": (f"test accuracy <strong>{accuracy_text(handin)}</strong>",
                   f"test accuracy <strong><span style=\"display:none\">{accuracy_text(handin)}</span>93.50%</strong>",
                   "hides, moves or adds text"),
        "profile": ('<span class="n">profile</span> <span class="o">=</span> <span class="s2">"smoke"</span>',
                    '<span class="n">profile</span> <span class="o">=</span> <span class="s2">"full"</span>',
                    "(injected parameters): profile = 'full'; metrics.json parameters.profile = 'smoke'"),
        "grid": (f"<td>{round(row['val_loss'], 4)}</td>", "<td>0.0123</td>", "is no configuration metrics.json"),
    }
    per_class = report[label]
    # the classification report is styled (its accuracy row's blanks): <th id=… class="row_heading …" >label</th>
    cell = re.search(rf">{re.escape(label)}</th>\s*<td [^>]*>{per_class['precision']:.3f}</td>",
                     (handin / "mlp" / "mlp.html").read_text())[0]
    edits["perclass"] = (cell, cell.replace(f">{per_class['precision']:.3f}<", ">0.123<"),
                         f"{label} precision: shows '0.123'")
    for name, (old, new, _) in edits.items():
        edit_page(copy(handin, tmp_path / "batch" / name), old, new)
    ok, out = verify(tmp_path / "batch", fake_data_dir)
    assert not ok
    blocks = re.split(r"^(?=OK|FAIL)", out, flags=re.M)
    for name, (_, _, expected) in edits.items():
        block = next(b for b in blocks if f"/{name}/mlp " in b)
        assert block.startswith("FAIL") and expected in block, (name, block)


def test_a_decoy_headline_does_not_stand_in_for_the_real_one(handin, tmp_path, fake_data_dir):
    folder = copy(handin, tmp_path / "ada")
    shown, loss = accuracy_text(folder), f"{metrics_of(folder)['best']['test']['loss']:.4f}"
    edit_page(folder, "<p><strong>Author:</strong> Ada",
              f"<p><strong>Author:</strong> Ada: test accuracy {shown}, test loss {loss}")
    edit_page(folder, f"test accuracy <strong>{shown}</strong>", "test accuracy <strong>93.50%</strong>")
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "headline: test accuracy 93.50%" in out


def test_appendix_parameters_are_checked(handin, tmp_path, fake_data_dir):
    folder = copy(handin, tmp_path / "ada")
    text = (folder / "mlp" / "mlp.html").read_text()
    match = re.search(r"parameter profile</th>\s*<td[^>]*>'smoke'</td>", text)
    assert match
    (folder / "mlp" / "mlp.html").write_text(text.replace(match.group(0), match.group(0).replace("'smoke'", "'full'")))
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "(appendix): parameter profile = 'full'; metrics.json has 'smoke'" in out


def test_additions_only_the_rerun_shows_are_caught(handin, tmp_path, fake_data_dir, stand_in_rerun):
    batch = tmp_path / "batch"
    edit_page(copy(handin, batch / "stray"), "<main>", "<main><p>Graded 10/10 by the course staff.</p>")
    edit_page(copy(handin, batch / "css"), "</style>", ".jp-OutputArea-output p::after { content: ' (A+)'; }</style>")
    edit_page(copy(handin, batch / "sentence"), "Best configuration:", "Best configuration (state of the art):")
    edit_page(copy(handin, batch / "incell"), '<div class="jp-Cell-outputWrapper">',
              '<div class="jp-Cell-outputWrapper"><p>Reviewed: A+</p>')
    figure = copy(handin, batch / "figure")  # the confusion matrix replaced by another figure of the report
    page = figure / "mlp" / "mlp.html"
    images = re.findall(r'src="(data:image/png;base64,[^"]+)"', page.read_text())
    page.write_text(page.read_text().replace(images[-1], images[0]))
    ok, out = verify(batch, fake_data_dir)
    assert not ok and out.count("FAIL") == 5, out
    assert "a figure that is not the rerun's" in out
    assert "text outside the cells' code and outputs: 'Graded 10/10" in out
    assert "text outside the cells' code and outputs: 'Reviewed: A+'" in out
    assert "style block(s) the toolkit's export does not write" in out
    assert "where the rerun shows" in out and "state" in out


def test_page_numbers_are_compared_within_the_tolerance_only_for_a_rerun_elsewhere(handin):
    from helpers.cli.verify_compare import compare_pages

    text = (handin / "mlp" / "mlp.html").read_text()
    loss = f"{metrics_of(handin)['best']['test']['loss']:.4f}"
    last = int(loss[-1])
    near = text.replace(f"<strong>{loss}</strong>", f"<strong>{loss[:-1]}{(last + 1) % 10}</strong>", 1)
    far = text.replace(f"<strong>{loss}</strong>", "<strong>0.1234</strong>", 1)
    honest = parse_page(text)
    assert compare_pages(parse_page(near), honest, "mlp.html")  # the same machine: equal, digit for digit
    assert compare_pages(parse_page(near), honest, "mlp.html", tolerance=1e-6) == [] or last == 9
    assert compare_pages(parse_page(far), honest, "mlp.html", tolerance=1e-6)


def test_a_confusion_matrix_edited_with_digests_recomputed_fails(handin, tmp_path, fake_data_dir, stand_in_rerun):
    folder = copy(handin, tmp_path / "ada")
    metrics = metrics_of(folder)
    metrics["best"]["test"]["confusion_matrix"][0][0] += 1
    write_metrics(folder, metrics, refingerprint=True)
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "best.test.confusion_matrix[0][0]" in out


def test_pathological_markup_is_read_in_bounded_time(handin, tmp_path, fake_data_dir, stand_in_rerun):
    import time

    deep = copy(handin, tmp_path / "batch" / "deep")
    edit_page(deep, "</body>", "<div>" * 200_000 + "hidden in the depths</body>")
    spans = copy(handin, tmp_path / "batch" / "spans")
    edit_page(spans, '<table border="1" class="dataframe">', '<table border="1" class="dataframe">'
              + "<tr><td rowspan=1000000000 colspan=1000000000>9</td></tr>" * 2000 + "</table><table>")
    start = time.perf_counter()
    ok, out = verify(tmp_path / "batch", fake_data_dir)
    assert time.perf_counter() - start < 60
    assert not ok and out.count("FAIL") == 2, out
    assert "'hidden in the depths'" in out and "a table of more than 200,000 cells" in out


def test_a_linked_or_huge_page_is_refused(handin, tmp_path, fake_data_dir):
    linked = copy(handin, tmp_path / "batch" / "linked")
    (linked / "mlp" / "mlp.html").unlink()
    (linked / "mlp" / "mlp.html").symlink_to("/etc/passwd")
    huge = copy(handin, tmp_path / "batch" / "huge")
    with open(huge / "mlp" / "mlp.html", "r+b") as f:
        f.truncate(200 * 2**20)
    ok, out = verify(tmp_path / "batch", fake_data_dir)
    assert not ok and "mlp.html is a symbolic link (to '/etc/passwd')" in out and "mlp.html is 200 MB" in out


def test_a_hostile_folder_name_is_printed_escaped(handin, tmp_path, fake_data_dir):
    folder = copy(handin, tmp_path / "ada\x1b[2J\u202eevil")
    (folder / "mlp" / "mlp.html").unlink()
    ok, out = verify(folder, fake_data_dir)
    assert not ok and "\x1b" not in out and "\u202e" not in out and "\\u001b[2J\\u202eevil" in out


def test_rerun_parameters_use_no_path_of_the_hand_in(tmp_path, fake_data_dir):
    reference = Reference(fake_data_dir, source_digest(fake_data_dir), False, True)
    declared = notebook_parameters("transfer")

    def params(**given):
        return {"section": "transfer", "parameters": {"weights": "pretrain", **given},
                "fingerprint": {"data": "x"}}

    for weights in ("/etc/passwd", "~/model.pt", "../../w.pt"):
        _, _, why = rerun_parameters(params(weights=weights), declared, reference=reference, data_root=None,
                                     scratch=tmp_path)
        assert why and "checkpoint file of the student's machine" in why
    _, _, why = rerun_parameters(params(grid={"weights": ["pretrain", "/etc/passwd"]}), declared,
                                 reference=reference, data_root=None, scratch=tmp_path)
    assert why and "/etc/passwd" in why
    got, replaced, why = rerun_parameters(params(data_dir="~root"), declared, reference=reference, data_root=None,
                                          scratch=tmp_path)
    assert why is None and got["data_dir"] == str(fake_data_dir) and "data_dir" in replaced
    _, _, why = rerun_parameters(params(dataset="/home/student/bones"), declared, reference=reference,
                                 data_root=None, scratch=tmp_path)
    assert why and "not verifiable" not in why and "--data-root" in why
    root = tmp_path / "root"
    shutil.copytree(fake_data_dir, root / "bones")
    metrics = params(dataset="/home/student/bones")
    metrics["fingerprint"]["data"] = "not its digest"
    _, _, why = rerun_parameters(metrics, declared, reference=reference, data_root=root, scratch=tmp_path)
    assert why and "is not the data the report read" in why
    metrics["fingerprint"]["data"] = folder_digest(root / "bones")
    got, _, why = rerun_parameters(metrics, declared, reference=reference, data_root=root, scratch=tmp_path)
    assert why is None and got["dataset"] == str(root / "bones")
    ae = {"section": "autoencoder", "parameters": {"cnn_metrics": "/etc/shadow"}, "fingerprint": {}}
    got, _, why = rerun_parameters(ae, notebook_parameters("autoencoder"), reference=reference, data_root=None,
                                   scratch=tmp_path)
    assert why is None and got["cnn_metrics"].startswith(str(tmp_path))


def test_a_rerun_that_fails_is_a_fail_line(handin, tmp_path, fake_data_dir, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    def broken(*args, **kwargs):
        raise PapermillExecutionError(4, 4, "cfg = ...", "ConfigError", "parameter activation='x' is not allowed", [])

    monkeypatch.setattr("helpers.cli.verify.execute", broken)  # verify imports it at the top
    ok, out = verify(copy(handin, tmp_path / "ada"), fake_data_dir)
    assert not ok and "the rerun failed in cell 4: ConfigError" in out


# ---- the two tests that start kernels ----

def test_a_forgery_with_every_digest_recomputed_is_caught_by_a_real_rerun(handin, tmp_path, fake_data_dir):
    batch = tmp_path / "batch"
    copy(handin, batch / "honest")
    forge_accuracy(copy(handin, batch / "forged"))
    ok, out = verify(batch, fake_data_dir)  # the two share one rerun: the same parameters
    assert not ok, out
    assert re.search(r"^OK .*honest/mlp", out, re.M) and re.search(r"^FAIL .*forged/mlp", out, re.M)
    assert re.search(r"best\.test\.accuracy\s+report\s+0\.935\s+rerun", out)


def test_timeout_stops_a_rerun(handin, tmp_path, fake_data_dir):
    # 4 s: the kernel has started (a limit that expires before it has is helpers.cli.kernels' to keep), the run not ended
    ok, out = verify(copy(handin, tmp_path / "ada"), fake_data_dir, timeout=4)
    assert not ok and "the rerun timed out after 4 s (--timeout)" in out
