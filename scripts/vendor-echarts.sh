#!/usr/bin/env bash
# Fetches the chart library the status pages use (Apache ECharts, from the npm
# registry) into orchestrator/assets/, and checks it is the file augur was built and
# tested with. augur serves it itself: a page never loads anything from the network.
# Run it only to check the vendored copy, or after changing VERSION and SHA256 here
# (and the name in orchestrator/src/app/pages.rs).
set -euo pipefail
VERSION=6.1.0
SHA256=b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0
cd "$(dirname "$0")/.."
out=orchestrator/assets
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "https://registry.npmjs.org/echarts/-/echarts-$VERSION.tgz" -o "$tmp/echarts.tgz"
tar -xzf "$tmp/echarts.tgz" -C "$tmp" package/dist/echarts.min.js package/LICENSE
echo "$SHA256  $tmp/package/dist/echarts.min.js" | sha256sum -c --quiet
cp "$tmp/package/dist/echarts.min.js" "$out/echarts-$VERSION.min.js"
cp "$tmp/package/LICENSE" "$out/echarts-LICENSE"
echo "vendored echarts $VERSION into $out"
