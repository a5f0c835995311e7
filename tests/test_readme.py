"""Every command the README shows still works as written: its options parse, its parameters reach a notebook
that declares them, and each section's configuration (grids included) validates; papermill examples pass lists
and mappings with -y (papermill keeps a -p list as a string)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from helpers.cli.main import build_parser, collect_parameters, parse_value, route_parameters
from helpers.cli.runner import SECTIONS, notebook_parameters
from helpers.sections import make_config

README = Path(__file__).resolve().parent.parent / "README.md"
NOTEBOOK_SECTION = {nb: s for s, (nb, _) in SECTIONS.items()}


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip()]


def defaults(section: str) -> dict:
    return {k: ast.literal_eval(v["default"]) for k, v in notebook_parameters(section).items()}


HELPERS = [c for c in commands() if "helpers" in c or "run.sh reports" in c]
PAPERMILL = [c for c in commands() if "papermill " in c]


def test_the_readme_shows_commands_of_each_kind():
    assert len(HELPERS) >= 10 and PAPERMILL and any("verify" in c for c in HELPERS)


@pytest.mark.parametrize("command", HELPERS)
def test_helpers_command_parses_and_validates(command):
    tokens = shlex.split(command, comments=True)
    if "run.sh" in tokens:
        argv = ["run", *tokens[tokens.index("reports") + 1:]]
    else:
        argv = tokens[tokens.index("helpers") + 1:]
    args = build_parser().parse_args(argv)
    if args.command != "run" or args.batch:
        return  # verify and params take no parameters; a batch file's rows are checked when it runs
    sections = args.sections or list(SECTIONS)
    declared = {k: v for s in sections for k, v in notebook_parameters(s).items()}
    routed = route_parameters(sections, collect_parameters(args, declared))
    for section in sections:
        make_config(section, **{**defaults(section), **routed[section]})


@pytest.mark.parametrize("command", PAPERMILL)
def test_papermill_command_passes_lists_with_y_and_validates(command):
    tokens = shlex.split(command.split("&&")[-1], comments=True)
    section = NOTEBOOK_SECTION[next(t for t in tokens if t.endswith(".ipynb"))]
    params = {}
    for i, t in enumerate(tokens):
        if t == "-p":
            name, value = tokens[i + 1], tokens[i + 2]
            assert not value.lstrip().startswith(("[", "{")), f"-p {name} {value}: papermill keeps it a string; use -y"
            params[name] = parse_value(value)  # as papermill types a -p value
        elif t == "-y":
            params.update(yaml.safe_load(tokens[i + 1]))
    assert set(params) <= set(notebook_parameters(section)), f"unknown parameters in {command}"
    make_config(section, **{**defaults(section), **params})
