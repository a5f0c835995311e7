#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11+ and nothing else):
#   bash run.sh reports [run options]   set up, get the data, produce every report into reports/
#   bash run.sh test [pytest options]   set up, then run the whole test suite
#   bash run.sh setup | data            only the set-up, or only getting the data
# Run options are those of `python -m helpers run` (e.g. --profile full, -p author_name "Ada", cnn mlp).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

setup_python() {
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "error: Python 3.11 or newer is needed ($PY is $("$PY" -V 2>&1))"; exit 1; }
    [ -x "$VENV/bin/python" ] || { say "creating virtual environment $VENV"; "$PY" -m venv "$VENV"; }
    # Reinstall only when the requirements changed since the last successful install.
    local stamp="$VENV/.installed" want
    want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing requirements (torch first: about a minute where a local copy exists)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
        "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
        echo "$want" > "$stamp"
    fi
}

setup_system() {
    # PDF export prints HTML with headless Chromium; tests render PDF pages with pdftoppm (poppler).
    local missing=()
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || command -v google-chrome >/dev/null 2>&1 || missing+=(chromium)
    command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing ${missing[*]} for PDF export"
        apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
            || echo "warning: could not install ${missing[*]}; HTML reports still work, PDFs fall back to WeasyPrint"
    else
        echo "note: for PDF export install ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]};" \
             "macOS: brew install --cask chromium && brew install poppler). HTML reports work without them."
    fi
}

get_data() {
    say "looking for Fashion-MNIST"
    "$VENV/bin/python" -c 'from helpers.data import fetch; print(fetch())'
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup_python; setup_system ;;
    data) setup_python; get_data ;;
    reports)
        setup_python; setup_system; get_data
        say "producing reports (python -m helpers run $*)"
        exec "$VENV/bin/python" -m helpers run "$@" ;;
    test)
        setup_python; setup_system
        # the real-data test is skipped (with its reason) when no data can be had
        get_data || echo "note: no Fashion-MNIST here; the real-data test will be skipped"
        say "running the tests"
        exec "$VENV/bin/python" -m pytest "$@" ;;
    *)
        sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
