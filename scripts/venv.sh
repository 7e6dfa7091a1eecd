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
  start=$SECONDS
  echo "xpgan: first run: building the Python environment in $venv" >&2
  echo "xpgan: (downloads torch and the other dependencies, about 2 GB; a few minutes; later runs reuse it)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  echo "xpgan: [1/3] creating the virtual environment" >&2
  "$py" -m venv "$venv"
  echo "xpgan: [2/3] installing pip's build tools" >&2
  "$venv/bin/python" -m pip install -q --upgrade "setuptools>=68" wheel >&2
  echo "xpgan: [3/3] installing the dependencies (torch, numba, dask, zarr, ...): pip reports each package" >&2
  "$venv/bin/python" -m pip install --progress-bar off -e '.[test]' >&2
  touch "$venv/.complete"
  echo "xpgan: environment ready in $((SECONDS - start)) s" >&2
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >&2
echo "$venv"
