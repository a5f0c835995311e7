#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11+ and nothing else):
#   bash run.sh reports [run options]   set up, get the data, produce every report into reports/
#   bash run.sh test [pytest options]   set up, then run the whole test suite
#   bash run.sh setup | data            only the set-up, or only getting the data
# Run options are those of `python -m helpers run` (e.g. --profile full, -p author_name "Ada", cnn mlp).
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

sha256() {
    # SHA-256 of standard input in hex: sha256sum (GNU coreutils), shasum -a 256 (macOS), else Python's hashlib
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 | cut -d' ' -f1
    else
        "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
    fi
}

requirements_digest() { cat requirements.txt requirements-dev.txt pyproject.toml | sha256; }

find_chromium() {
    # The places helpers/export.py looks at: $CHROMIUM alone when set, else the usual names, else the macOS apps.
    if [ -n "${CHROMIUM:-}" ]; then
        command -v "$CHROMIUM" 2>/dev/null
        return
    fi
    local name app
    for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do
        command -v "$name" 2>/dev/null && return 0
    done
    for app in "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome" \
               "/Applications/Chromium.app/Contents/MacOS/Chromium" \
               "$HOME/Applications/Google Chrome.app/Contents/MacOS/Google Chrome" \
               "$HOME/Applications/Chromium.app/Contents/MacOS/Chromium"; do
        [ -x "$app" ] && { echo "$app"; return 0; }
    done
    return 1
}

setup_python() {
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "error: Python 3.11 or newer is needed ($PY is $("$PY" -V 2>&1))"; exit 1; }
    [ -x "$VENV/bin/python" ] || { say "creating virtual environment $VENV"; "$PY" -m venv "$VENV"; }
    # Reinstall only when the requirements changed since the last successful install.
    local stamp="$VENV/.installed" want
    want=$(requirements_digest)
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
    find_chromium >/dev/null || missing+=(chromium)
    command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing ${missing[*]} for PDF export"
        apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
            || echo "warning: could not install ${missing[*]}; HTML reports still work, PDFs fall back to WeasyPrint"
    else
        echo "note: for PDF export install ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]};" \
             "macOS: brew install --cask chromium && brew install poppler; Google Chrome in /Applications" \
             "is found too, or set CHROMIUM=/path/to/chrome). HTML reports work without them."
    fi
}

setup_all() {
    # Debian's packages download while pip installs: neither waits for the other (on a fresh machine the two
    # together take about as long as pip alone). What apt printed follows pip's lines.
    local log
    log=$(mktemp)
    setup_system >"$log" 2>&1 &
    local system=$!
    setup_python
    wait "$system" || true
    cat "$log"
    rm -f "$log"
}

get_data() {
    say "looking for Fashion-MNIST"
    "$VENV/bin/python" -c 'from helpers.data.fashion import fetch; print(fetch())'
}

# `source run.sh` (as the tests do) only defines the functions above
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
cd "$(dirname "$0")"
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup_all ;;
    data) setup_python; get_data ;;
    reports)
        setup_all; get_data
        say "producing reports (python -m helpers run $*)"
        exec "$VENV/bin/python" -m helpers run "$@" ;;
    test)
        setup_all
        # the real-data test is skipped (with its reason) when no data can be had
        get_data || echo "note: no Fashion-MNIST here; the real-data test will be skipped"
        # two test processes (TEST_WORKERS=0: one): the suite's time is mostly kernels starting, which overlap well;
        # worksteal hands a finished worker the tests still queued for the other, so neither ends long alone
        say "running the tests on ${TEST_WORKERS:-2} processes"
        exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-2}" --dist worksteal "$@" ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
