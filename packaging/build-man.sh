#!/usr/bin/env bash
# Writes lambdactl.1 and lambdad.8 into DIR (default: man/) from the real argparse parsers.
set -euo pipefail
out="${1:-man}"
bin="$(dirname "$0")/../.venv/bin"
manpage=("$bin/argparse-manpage" --project-name lambda --version 0.1.0 --author "the lambda authors")
mkdir -p "$out"
"${manpage[@]}" --module lambdactl.parser --function build_parser --prog lambdactl \
  --manual-section 1 --description "control the lambda FaaS daemon" --output "$out/lambdactl.1"
"${manpage[@]}" --module lambdad.config.parser --function build_parser --prog lambdad \
  --manual-section 8 --description "the lambda FaaS daemon" --output "$out/lambdad.8"
