#!/usr/bin/env bash
# Tests the `augur` Python package (python/): installs it with `pip install ./python`
# into a cached virtualenv beside the frameworks its callbacks are tested against
# (python/requirements-test.txt: XGBoost, LightGBM, Keras on JAX's CPU build, from
# PyPI), then runs its tests with pytest against the installed package.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
reqs="$root/python/requirements-test.txt"
tag="$(sha256sum "$reqs" | cut -c1-12)"
venv="${AUGUR_CACHE:-$HOME/.cache/augur}/python-test-$tag"
if [ ! -x "$venv/bin/pytest" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$root/python"
# From outside the source tree, so `import augur` is the installed package.
cd "$(mktemp -d)"
KERAS_BACKEND=jax exec "$venv/bin/pytest" -q -p no:cacheprovider "$root/python/tests"
