#!/usr/bin/env bash
# Ensures the project's virtual environment exists and prints its path on stdout (all else on stderr).
# The venv holds the dependencies and is cached outside the clone, keyed on the dependency list
# (setup.cfg + pyproject.toml); the project itself is re-installed (editable, no deps, seconds) every
# time so a cached venv always points at this checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=${PYTHON:-python3}
key=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
root=${XPGAN_VENV_ROOT:-$HOME/.cache/xpgan}
venv="$root/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "xpgan: creating $venv (torch is large: a few minutes the first time)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade "setuptools>=68" wheel >&2
  "$venv/bin/python" -m pip install -q -e '.[test]' >&2
  touch "$venv/.complete"
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >&2
echo "$venv"
