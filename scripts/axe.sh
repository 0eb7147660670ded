#!/usr/bin/env bash
# Installs axe-core (Deque's accessibility rules engine, from the npm registry) into
# a cache, idempotently, checks it is the file the browser test was written against,
# and prints the path of its axe.min.js. The browser test evaluates it in each status
# page (through Chromium's DevTools protocol) and asserts WCAG 2 A and AA hold.
set -euo pipefail
VERSION=4.14.1
SHA256=29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c
dir="${XDG_CACHE_HOME:-$HOME/.cache}/augur/axe-core-$VERSION"
file="$dir/axe.min.js"
if [ ! -f "$file" ]; then
  mkdir -p "$dir"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL "https://registry.npmjs.org/axe-core/-/axe-core-$VERSION.tgz" -o "$tmp/axe.tgz"
  tar -xzf "$tmp/axe.tgz" -C "$tmp" package/axe.min.js package/LICENSE
  echo "$SHA256  $tmp/package/axe.min.js" | sha256sum -c --quiet
  cp "$tmp/package/LICENSE" "$dir/LICENSE"
  mv "$tmp/package/axe.min.js" "$file"
fi
echo "$file"
