"""A report is untrusted input for the grader who opens it: hostile author fields, parameter values, configuration
and class names must show as the characters given, never become markup, script, a fetched file or a crash.

Each value goes through the real functions (the escape helpers, the author block, the observations, the appendix,
nbconvert's export with the project's template, WeasyPrint and Chromium, the plot functions), and one test runs a
real section through the documented command.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

from helpers.reporting import export, observations, plots, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = export.find_chromium()
POPPLER = all(shutil.which(t) for t in ("pdftotext", "pdfimages", "pdfdetach"))

# The values of the issue, then others it did not list
ISSUE_VALUES = ["<script>alert(1)</script>Alice", "</style><script>alert(1)</script>", '<iframe src="file:///etc/passwd">',
                "<img src=x onerror=alert(1)>", "![x](file:///etc/passwd)", "a`b", "x](javascript:alert(1))",
                "$\\alpha$_{"]
UNSEEN_VALUES = [
    "<svg onload=alert(1)>", "[click](javascript:alert(1))", '<a href="javascript:alert(1)">x</a>',
    "<style>body{display:none}</style>", "&lt;b&gt; stays &amp;lt;", "x\"); background: url(file:///etc/hostname); a:(\"",
    "Alice\u202e%00.27", "Bob\n# Heading\n\n- item\n<script>x</script>", "\x1b[31mred\x1b[0m\x00nul",
    "zero\u200bwidth\U000e0041tag", "<!-- swallow the rest", "{{ 7*7 }} {% raw %}",
    '<meta http-equiv="refresh" content="0;url=http://evil.example">', '<base href="http://evil.example/">',
    "*em* __strong__ `code` ~~del~~ <b>b</b>", "<https://evil.example>", "``` fenced", "\\", "trailing\\",
    "李雷 José 🙂\u200d↔\ufe0f", "$\\frac{$", "$x^$ $\\nocommand$", '<details open ontoggle="alert(1)">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", "\r\n\r\n<h1>x</h1>", "1. list\n> quote\n---",
    "x" * 3000,
]
HOSTILE = ISSUE_VALUES + UNSEEN_VALUES
DATA_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv"
            "AAAAAElFTkSuQmCC")


def md(source: str, *, escape: bool) -> str:
    """Markdown rendered as nbconvert renders it: ``escape=False`` as it renders any notebook (raw HTML kept),
    ``escape=True`` as this project's export renders cell outputs."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    renderer = IPythonRenderer(escape=escape, allow_harmful_protocols=not escape)
    return MarkdownWithMath(renderer=renderer).render(source).strip()


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


# --- the escape helpers, through the real Markdown renderer -----------------------------------------------------

@pytest.mark.parametrize("escape", [False, True], ids=["notebook-renderer", "report-renderer"])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: ascii(v)[:40])
def test_md_text_and_md_code_render_every_hostile_value_as_its_characters(value, escape):
    from helpers.escape import md_code, md_text, visible

    shown = visible(value)
    assert "\n" not in shown and "\u202e" not in shown and "\x1b" not in shown
    out = md(f"**A:** {md_text(value)} Z", escape=escape)
    body = out.removeprefix("<p><strong>A:</strong> ").removesuffix(" Z</p>")
    assert "<" not in body, out  # text only: not one tag
    if escape or "&" not in value:
        # (mistune's notebook renderer reads an entity after an escaped \\& as an entity: "&lt;" shows as the
        # text "<" there, never as markup; the report's renderer and JupyterLab show it as written)
        assert text_of(body) == shown
    out = md(f"- **B:** {md_code(value)} Z", escape=escape)
    code = re.fullmatch(r"<ul>\s*<li><strong>B:</strong> <code>(.*)</code> Z</li>\s*</ul>", out, flags=re.S)
    assert code, out
    assert "<" not in code.group(1) and html.unescape(code.group(1)) == shown


def test_visible_names_invisible_characters_and_css_string_stays_inside_its_quotes():
    from helpers.escape import css_string, visible

    assert visible("a\u202eb\u2066c\x00d") == "a[U+202E]b[U+2066]c[U+0000]d"
    assert visible("فارسی\u200cها") == "فارسی\u200cها"  # the joiner a script needs is kept
    for value in HOSTILE:
        css = css_string(value)
        inner = css[1:-1]
        assert css[0] == css[-1] == '"' and '"' not in inner and "<" not in inner and "\n" not in inner
        assert re.sub(r"\\([0-9a-f]+) ", lambda m: chr(int(m.group(1), 16)), inner) == visible(value)


# --- what the sections write --------------------------------------------------------------------------------------

def cfg(**fields):
    base = {"author_name": "Ada", "author_id": "A-1", "course": "DL", "profile": "smoke", "seed": 0}
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize("escape", [False, True], ids=["notebook-renderer", "report-renderer"])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: ascii(v)[:40])
def test_author_block_shows_the_fields_literally(value, escape):
    out = md(report.author_block(cfg=cfg(author_name=value, author_id=value, course=value), title="Report"),
             escape=escape)  # escape=False: as any notebook viewer renders it, without this project's export
    assert out.count("<h1") == 1
    block = out[out.index("</h1>"):]  # (the toolkit's heading has its anchor link)
    assert not re.search(r"<(script|iframe|img|svg|style|a|meta|base|details|math|h\d|em|del|blockquote)\b", block), out
    # (values with invisible characters show them by code point; "&lt;": see the test above)
    if re.sub(r"\s", " ", value).isprintable() and (escape or "&" not in value):
        assert " ".join(value.split()) in " ".join(text_of(out).split())


def grid_table(names):
    n = len(names)
    return pd.DataFrame({"name": names, "val_acc": np.linspace(0.9, 0.5, n), "val_loss": np.linspace(0.3, 0.9, n),
                         "train_acc": np.linspace(0.95, 0.6, n), "seconds": np.linspace(1.0, 3.0, n),
                         "status": ["completed"] * (n - 1) + ["<img src=x onerror=alert(1)> NaN loss"],
                         "pool": names, "val_acc_std": [0.01] * n, "repeats": [2] * n})


def test_observations_show_configuration_and_class_names_literally():
    from helpers.engine.experiment import spread_observations

    names = ["<svg onload=alert(1)>", "x](javascript:alert(1)) `tick`", "![y](file:///etc/passwd)",
             "<img src=x onerror=alert(1)>", "Bob\n# Heading"]
    table = grid_table(names)
    classes = ["<script>alert(1)</script>", "![c](file:///etc/hostname)", "T-shirt"]
    final = {"test": {"accuracy": 0.8, "loss": 0.5,
                      "most_confused": pd.DataFrame({"true": classes[:1], "predicted": classes[1:2], "count": [3],
                                                     "share_of_true": [0.1]}),
                      "per_class": pd.DataFrame({"class": classes, "accuracy": [0.5, 0.7, 0.9]})}}
    text = "\n".join([observations.grid_observations(table, {}, final=final),
                      observations.factor_observations(table, ["pool"]), spread_observations(table),
                      report.grid_summary([{"name": n, "<b>k</b>": 1} for n in names[:2]])])
    out = md(text, escape=False)
    assert not re.search(r"<(script|svg|img|iframe|a|h1)\b", out), out
    shown = text_of(out)
    for name in [*names[:4], *classes[:2], "Bob # Heading"]:
        assert name in shown, name


@pytest.mark.parametrize("value", ISSUE_VALUES + UNSEEN_VALUES[:8], ids=lambda v: ascii(v)[:40])
def test_appendix_escapes_every_parameter(value):
    styled = report.appendix({"device": "cpu"}, seconds=1.0, params={"author_name": value, "grid": [{"name": value}],
                                                                   value: 1})
    page = styled.to_html()
    assert "<script>" not in page and "<img src" not in page and "<svg" not in page and "<iframe" not in page
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", page, flags=re.S)]
    assert repr(value) in cells  # shown as written, quotes and all


# --- the export: policy, scripts, Markdown outputs, running header ----------------------------------------------

def exported(tmp_path, outputs, *, author="", cells=(), widgets=False) -> str:
    nb = new_notebook()
    if widgets:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells = [new_markdown_cell("# A report\n\nThe toolkit's own **text**."), *cells,
                new_code_cell("x = 1", outputs=[new_output("display_data", data=d) for d in outputs])]
    nbformat.write(nb, str(tmp_path / "r.ipynb"))
    return export.export_html(tmp_path / "r.ipynb", tmp_path / "r.html", author=author).read_text()


def body_of(page: str) -> str:
    return page[page.index("<body"):]


def test_report_is_script_free_and_starts_with_a_strict_policy(tmp_path):
    page = exported(tmp_path, [{"application/javascript": "document.title = 'owned'"},
                               {"text/markdown": "**fine**"}], widgets=True)
    head = page[page.lower().index("<head>") + 6:].lstrip()
    assert head.startswith("<meta") and "Content-Security-Policy" in head[:300]
    policy = re.search(r'content="([^"]*default-src[^"]*)"', head[:300]).group(1)
    assert "default-src 'none'" in policy and "img-src data:" in policy and "script-src" not in policy
    assert "<script" not in page.lower()  # nothing to run: the page is the same with JavaScript off
    assert "<strong>fine</strong>" in page and "<strong>text</strong>" in page


def test_markdown_outputs_keep_no_raw_html_and_no_harmful_link(tmp_path):
    """A value that was not escaped where it was interpolated is still shown as text by the export."""
    missed = ("<img src=file:///etc/hostname onerror=alert(1)> [x](javascript:alert(1)) "
              "![y](file:///etc/passwd) <iframe src=file:///etc/passwd></iframe> <svg onload=alert(1)>")
    body = body_of(exported(tmp_path, [{"text/markdown": missed}]))
    assert "<img src=file" not in body and '<img src="file' not in body and "<iframe" not in body
    assert 'href="javascript' not in body and "<svg" not in body
    assert "&lt;img src=file:///etc/hostname onerror=alert(1)&gt;" in body  # the characters, shown


@pytest.mark.parametrize("author", ["</style><script>alert(1)</script>", 'x"; } body { display: none } @x { "',
                                    "url(file:///etc/hostname) \\\" \\", "Ada\nLovelace\u202e", "y" * 400])
def test_pdf_running_header_is_one_css_string(tmp_path, author):
    page = exported(tmp_path, [{"text/markdown": "text"}], author=author)
    style = re.search(r"<style[^>]*>\s*@page\s*\{(.*?)</style>", page, flags=re.S)
    assert style and "@bottom-center" in style.group(1), "the header's value ended the <style> element"
    assert "<script" not in page
    content = re.search(r'@top-right \{ content: "((?:[^"\\]|\\[0-9a-f]+ )*)"; font', style.group(1))
    assert content, style.group(1)[:400]
    shown = re.sub(r"\\([0-9a-f]+) ", lambda m: chr(int(m.group(1), 16)), content.group(1))
    expected = author.replace("\n", " ").replace("\u202e", "[U+202E]")
    assert shown == (expected if len(expected) <= 90 else expected[:89] + "…")


# --- the PDF printers read nothing outside the report's folder ----------------------------------------------------

SECRET_SIZE, INSIDE_SIZE = (3, 5), (2, 2)  # the data: image is 1 x 1: each image is told by its size


def png(size) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_page(tmp_path) -> tuple[Path, Path]:
    """A report folder whose page points at a secret folder beside it in every way WeasyPrint reads a URL, plus
    one image and one attachment inside the folder (which must still work) and a data: image."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "secret.png").write_bytes(png(SECRET_SIZE))
    (secret / "secret.txt").write_text("SECRET-MARKER-4711")
    (secret / "secret.css").write_text("body { background: url(secret.png); }")
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "inside.png").write_bytes(png(INSIDE_SIZE))
    (folder / "inside.txt").write_text("inside")
    (folder / "link-out.png").symlink_to(secret / "secret.png")
    s = (secret / "secret.png").as_uri()
    page = folder / "r.html"
    page.write_text(f"""<!DOCTYPE html><html><head>
<link rel="stylesheet" href="{(secret / 'secret.css').as_uri()}">
<link rel="attachment" href="{(secret / 'secret.txt').as_uri()}">
<style>@import url("../secret/secret.css"); p {{ background: url("{s}"); }}
@font-face {{ font-family: X; src: url("{(secret / 'secret.txt').as_uri()}"); }}</style></head><body>
<p>static text</p><img src="{s}"><img src="../secret/secret.png"><img src="link-out.png">
<img src="file://localhost{secret / 'secret.png'}"><img src="/{secret.relative_to('/') / 'secret.png'}">
<object data="{s}" type="image/png"></object><embed src="{s}" type="image/png">
<svg width="10" height="10"><image href="{s}" width="10" height="10"/></svg>
<a rel="attachment" href="{(secret / 'secret.txt').as_uri()}">a</a>
<img src="inside.png"><a rel="attachment" href="inside.txt">in</a>
<img src="{DATA_PNG}">
</body></html>""")
    return folder, page


def pdf_images(pdf: Path) -> list[tuple[int, int]]:
    """(width, height) of each image in the PDF (masks left out)."""
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in listing.strip().splitlines()[2:]]  # after two header lines
    return [(int(r[3]), int(r[4])) for r in rows if r[2] == "image"]


def pdf_attachments(pdf: Path) -> list[str]:
    out = subprocess.run(["pdfdetach", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"^\d+: (.*)$", out, flags=re.M)


@pytest.mark.skipif(not POPPLER, reason="pdfimages/pdfdetach (poppler-utils) are missing")
def test_weasyprint_reads_data_urls_and_the_report_folder_only(tmp_path):
    pytest.importorskip("weasyprint")
    folder, page = hostile_page(tmp_path)
    pdf, engine = export.export_pdf(page, folder / "r.pdf", engine="weasyprint")
    assert engine == "weasyprint"
    assert pdf_attachments(pdf) == ["inside.txt"]  # attachments work, but only from inside the folder
    # inside.png and the data: image, and none of the nine ways to the secret one
    assert sorted(pdf_images(pdf)) == sorted([INSIDE_SIZE, (1, 1)])
    assert b"SECRET-MARKER" not in pdf.read_bytes()


def test_chromium_is_given_a_page_that_starts_with_the_policy(tmp_path, monkeypatch):
    """Headless Chromium has no switch that turns JavaScript off and still prints: the page's policy must."""
    seen = tmp_path / "seen.json"
    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import json, sys
from urllib.parse import urlsplit, unquote
page = unquote(urlsplit(sys.argv[-1]).path)
json.dump({{"args": sys.argv[1:], "start": open(page).read(600)}}, open({str(seen)!r}, "w"))
pdf = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--print-to-pdf="))
open(pdf, "wb").write(b"%PDF-1.4\\n%%EOF\\n")
""")
    fake.chmod(0o755)
    monkeypatch.setenv("CHROMIUM", str(fake))
    monkeypatch.setattr(export, "running_as_root", lambda: True)
    folder, page = hostile_page(tmp_path)
    page.write_text("<script>document.body.innerHTML='JS RAN'</script>" + page.read_text())
    export.export_pdf(page, folder / "r.pdf", engine="chromium")
    got = json.loads(seen.read_text())
    start = re.sub(r"^<!DOCTYPE html>", "", got["start"]).lstrip()
    assert re.match(r'<meta http-equiv="Content-Security-Policy" content="default-src \'none\';', start), start
    assert any(a.startswith("--host-resolver-rules=") for a in got["args"])
    assert not list(folder.glob(".*print*"))  # the copy it printed is gone


class Hits(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        Hits.seen.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(png((4, 4)))

    def log_message(self, *args):
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
@pytest.mark.skipif(not POPPLER, reason="pdftotext/pdfimages (poppler-utils) are missing")
def test_real_chromium_runs_no_script_and_reads_no_file_and_no_network(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder, page = hostile_page(tmp_path)
        port = server.server_address[1]
        page.write_text(page.read_text().replace(
            "<p>static text</p>", f"<p id=p>static text</p><script>document.getElementById('p').textContent="
            f"'JS RAN'</script><iframe src=\"{(tmp_path / 'secret' / 'secret.txt').as_uri()}\"></iframe>"
            f"<img src=\"http://127.0.0.1:{port}/ip.png\"><img src=\"http://localhost:{port}/name.png\">"))
        pdf, engine = export.export_pdf(page, folder / "r.pdf", engine="chromium")
    finally:
        server.shutdown()
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "static text" in text and "JS RAN" not in text and "SECRET-MARKER" not in text
    assert Hits.seen == []
    # no image but the data: one (and Chromium's broken-image icons): the policy allows no file: image at all
    assert SECRET_SIZE not in pdf_images(pdf) and INSIDE_SIZE not in pdf_images(pdf) and (4, 4) not in pdf_images(pdf)


# --- figures -------------------------------------------------------------------------------------------------------

BAD_MATH = ["$\\frac{$", "$x^$ and $\\nocommand$", "$\\alpha$_{", "a$b", "cost $5 and $", "\\$ kept"]


def drawn(fig) -> list[str]:
    fig.canvas.draw()  # mathtext is parsed here: a bad name raised ValueError
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_every_plot_draws_hostile_names_and_values_literally():
    from helpers.reporting.plots import literal

    names = BAD_MATH
    hist = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1 / e, "val_acc": 0.5} for e in (1, 2)]
    histories = {n: hist for n in names}
    per_class = pd.DataFrame({"class": names, "accuracy": np.linspace(0.2, 0.9, len(names))})
    table = pd.DataFrame({"name": names, "val_acc": np.linspace(0.5, 0.9, len(names))})
    images = np.zeros((len(names), 1, 8, 8))
    figs = [plots.plot_curves(histories, title=names[0], ylabel=names[1]),
            plots.plot_learning_curves(histories, title=names[0]), plots.plot_history_grid(histories, title=names[1]),
            plots.plot_confusion_matrix(np.eye(len(names), dtype=int), names, title=names[0]),
            plots.plot_per_class_accuracy(per_class, title=names[1]),
            plots.plot_image_grid(images, names, title=names[0]),
            plots.plot_feature_maps(np.ones((2, 3, 4, 4)), row_titles=names[:2], title=names[1]),
            plots.plot_grid_results(table, title=names[0]),
            plots.plot_reconstructions(images, images, images, col_titles=names, title=names[1]),
            plots.plot_projection(np.zeros((len(names), 2)), np.arange(len(names)), names, title=names[0],
                                  xlabel=names[1], ylabel=names[2]),
            plots.mark_epochs(plots.plot_curves({"a": hist}), {names[0]: 1}),
            plots.plot_per_class_comparison({n: {c: 0.5 for c in names[:3]} for n in names[:3]}, title=names[1])]
    shown = set()
    for fig in figs:
        for t in fig.findobj(matplotlib.text.Text):
            shown.add(t._preprocess_math(t.get_text()))
        drawn(fig)
    for name in names:  # each drawn as its characters, not as mathtext
        assert (name, False) in shown, name
    assert literal("\\$ kept") != "\\$ kept" and (("\\$ kept", False) in shown)
    plt.close("all")


# --- end to end: the documented command ---------------------------------------------------------------------------

def test_hostile_values_through_the_documented_command(tmp_path, fake_data_dir):
    """``python -m helpers run mlp --profile smoke`` with hostile author fields, configuration names and a data
    folder whose name is markup: the run succeeds, the HTML shows every value as text, the PDF embeds no file."""
    data = tmp_path / "data <img src=x onerror=alert(1)> `$\\frac{$`"
    shutil.copytree(fake_data_dir, data)
    author = "<script>alert(1)</script>Alice\n# Owned"
    author_id = "</style><script>alert(1)</script>"
    course = '<iframe src="file:///etc/passwd"></iframe>'
    names = ["<svg onload=alert(1)> $\\frac{$", "x](javascript:alert(1)) ![i](file:///etc/hostname)"]
    grid = json.dumps([{"name": names[0], "optimizer": "adam"}, {"name": names[1], "optimizer": "sgd"}])
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "helpers", "run", "mlp", "--profile", "smoke", "--output-dir", str(out), "--no-cache",
         "-p", "data_dir", str(data), "-p", "grid", grid, "-p", "author_name", author, "-p", "author_id", author_id,
         "-p", "course", course], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HELPERS_PROGRESS": "0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (out / "mlp" / "mlp.html").read_text()
    body = body_of(page)
    for raw in ("<script", "<iframe", "<img src=x", "<svg", "<img src=\"file", 'href="javascript'):
        assert raw not in body, raw
    assert not re.search(r"<h1[^>]*>\s*Owned", body)
    assert "</style><script>" not in page and "<script" not in page
    text = text_of(body)
    for value in [author.replace("\n", " "), author_id, course, *names, str(data)]:
        assert value in text, value
    pdfs = [out / "mlp" / "mlp.pdf"]
    if "weasyprint" not in (json.loads((out / "run.json").read_text())[0].get("pdf_engine") or ""):
        try:  # the other printer too, when it is installed
            pdfs.append(export.weasyprint_pdf(out / "mlp" / "mlp.html", out / "mlp" / "weasy.pdf"))
        except export.ExportError:
            pass
    for pdf in pdfs:
        assert export.complete_pdf(pdf)
        if POPPLER:
            assert pdf_attachments(pdf) == []
            shown = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
            assert "<script>alert(1)</script>Alice" in shown and "root:x:0:0" not in shown
