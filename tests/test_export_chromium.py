"""Finding Chromium ($CHROMIUM, PATH, macOS app bundles) and printing where its sandbox cannot start, with a fake
Chromium: a script that fails like Chromium in a container unless given --no-sandbox, and otherwise writes a PDF."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.reporting import export

FAKE = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CHROMIUM_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_CHROMIUM_MODE", "sandbox")
if mode == "broken" or (mode == "sandbox" and "--no-sandbox" not in args):
    sys.stderr.write("[1:1:FATAL:zygote_host_impl_linux.cc(127)] No usable sandbox! If you are running on Ubuntu "
                     "23.10+ or another Linux distro that has disabled unprivileged user namespaces ...\\n"
                     if mode == "sandbox" else "[1:1:FATAL] cannot open display\\n")
    sys.exit(133)
pdf = next(a.split("=", 1)[1] for a in args if a.startswith("--print-to-pdf="))
assert args[-1].startswith("file://"), args
with open(pdf, "wb") as f:
    f.write(b"%PDF-1.4\\n% fake chromium\\n%%EOF\\n")
"""


def make_fake(folder: Path, name: str = "chromium") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_chromium(tmp_path, monkeypatch):
    """A fake ``chromium`` alone on PATH, run as a non-root user; returns a function reading its calls."""
    bin_dir = tmp_path / "bin"
    make_fake(bin_dir)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("FAKE_CHROMIUM_LOG", str(log))
    monkeypatch.setattr(export, "running_as_root", lambda: False)
    monkeypatch.setattr(export, "MACOS_APP_DIRS", ())
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def page(tmp_path) -> Path:
    html = tmp_path / "report.html"
    html.write_text("<!DOCTYPE html><html><body><h1>Report</h1></body></html>")
    return html


def test_no_usable_sandbox_prints_again_with_no_sandbox_and_says_so(fake_chromium, page, tmp_path):
    said = []
    pdf, engine = export.export_pdf(page, tmp_path / "report.pdf", engine="chromium", log=said.append)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert engine == "chromium --no-sandbox"
    first, second = fake_chromium()
    assert "--no-sandbox" not in first and "--no-sandbox" in second  # sandboxed first, once more without
    assert len(said) == 1 and "--no-sandbox" in said[0] and "sandbox cannot start" in said[0]


def test_a_sandbox_that_works_is_kept(fake_chromium, page, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CHROMIUM_MODE", "ok")
    said = []
    pdf, engine = export.export_pdf(page, tmp_path / "report.pdf", engine="chromium", log=said.append)
    assert engine == "chromium" and pdf.exists() and not said
    assert [("--no-sandbox" in call) for call in fake_chromium()] == [False]


def test_root_starts_without_sandbox_at_once(fake_chromium, page, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "running_as_root", lambda: True)
    pdf, engine = export.export_pdf(page, tmp_path / "report.pdf", engine="chromium", log=print)
    assert engine == "chromium" and pdf.exists()
    assert [("--no-sandbox" in call) for call in fake_chromium()] == [True]


def test_chromium_failing_both_ways_names_both_errors(fake_chromium, page, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CHROMIUM_MODE", "broken")
    with pytest.raises(export.ExportError, match="neither with its sandbox .*cannot open display.* nor with "
                                                 "--no-sandbox"):
        export.export_pdf(page, tmp_path / "report.pdf", engine="chromium")
    assert len(fake_chromium()) == 2 and not (tmp_path / "report.pdf").exists()


def test_chromium_env_names_the_browser(fake_chromium, tmp_path, monkeypatch):
    elsewhere = make_fake(tmp_path / "opt" / "my browser", "chrome-for-testing")
    monkeypatch.setenv("CHROMIUM", str(elsewhere))
    assert export.find_chromium() == str(elsewhere)  # chosen over the chromium on PATH


def test_chromium_env_that_is_wrong_is_named_not_replaced(fake_chromium, page, tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-chrome"))
    assert export.find_chromium() is None  # not silently the chromium on PATH
    with pytest.raises(export.ExportError, match="CHROMIUM=.*no-such-chrome.* is not an executable"):
        export.export_pdf(page, tmp_path / "report.pdf", engine="chromium")


@pytest.mark.parametrize("app", ["Google Chrome.app/Contents/MacOS/Google Chrome",
                                 "Chromium.app/Contents/MacOS/Chromium"])
def test_macos_app_bundles_are_found(fake_chromium, tmp_path, monkeypatch, app):
    applications = tmp_path / "Applications"
    browser = make_fake((applications / app).parent, Path(app).name)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(export, "MACOS_APP_DIRS", (tmp_path / "nothing-here", applications))
    assert export.find_chromium() == str(browser)


def test_no_chromium_says_where_it_looked(fake_chromium, page, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(export.ExportError, match="no Chromium found .*Google Chrome.app"):
        export.export_pdf(page, tmp_path / "report.pdf", engine="chromium")
