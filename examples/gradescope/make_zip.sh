#!/usr/bin/env bash
# Build autograder.zip for Gradescope: setup.sh and run_autograder at the root, the harness
# (this repository's committed tree) under rabbit-lab/, and rubric.toml if you pass one.
#   bash examples/gradescope/make_zip.sh [rubric.toml]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/setup.sh" "$here/run_autograder" "$work/"
mkdir "$work/rabbit-lab"
git -C "$repo" archive HEAD | tar -x -C "$work/rabbit-lab"
if [ $# -ge 1 ]; then cp "$1" "$work/rubric.toml"; fi
(cd "$work" && zip -qr "$repo/autograder.zip" .)
echo "wrote $repo/autograder.zip"
