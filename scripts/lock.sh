#!/usr/bin/env sh
# Re-resolve the lock files in requirements/ from pyproject.toml (run by `make lock`).
#
# bench.txt is every extra at once; the narrower files are resolved under its pins, so a
# package has one version in every file. Each file pins every package with its hashes,
# for CPython 3.11 on Linux x86_64 (the Docker images and CI).
set -eu
COMPILE="$1 --quiet --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --strip-extras --no-header"
PINS=requirements/.pins.txt
trap 'rm -f "$PINS"' EXIT

$COMPILE --upgrade --all-build-deps --extra export,serve,spark,dev,bench -o requirements/bench.txt pyproject.toml requirements/backports.in
sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' requirements/bench.txt > "$PINS"
$COMPILE --all-build-deps -c "$PINS" --extra export,serve,spark,dev -o requirements/dev.txt pyproject.toml requirements/backports.in
$COMPILE --all-build-deps -c "$PINS" --extra export,spark -o requirements/export.txt pyproject.toml requirements/backports.in
$COMPILE --all-build-deps -c "$PINS" --extra serve -o requirements/serve.txt pyproject.toml requirements/backports.in
