#!/usr/bin/env bash
# `hearth serve` driven by real clients (tests/serve/check.py): the openai Python package,
# curl and plain HTTP. Installs the pinned openai package into a venv kept in
# ~/.cache/hearth (or $HEARTH_CACHE); where pip cannot fetch it, says so and skips, except
# under CI=true, where that fails.
# Usage: tests/serve/run.sh HEARTH_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HEARTH_CACHE:-$HOME/.cache/hearth}"
venv="$cache/serve-venv-$(sha256sum "$here/requirements.txt" | cut -c1-12)"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  rm -rf "$venv"
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"; }; then
    rm -rf "$venv"
    if [ "${CI:-}" = "true" ]; then
      echo "serve check: pip could not install the openai package" >&2
      exit 1
    fi
    echo "serve check SKIPPED: pip could not install the openai package (no registry?)"
    exit 0
  fi
fi
command -v curl >/dev/null || { echo "serve check: curl is missing" >&2; exit 1; }
"$venv/bin/python" "$here/check.py" "$@"
