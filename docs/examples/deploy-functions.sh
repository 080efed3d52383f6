#!/usr/bin/env bash
# Deploys function folders to a remote lambdad, smoke-tests each, and rolls back a
# function whose smoke test fails. Used by docs/examples/github-actions.yml; see
# docs/ci-cd.md. Needs lambdactl on PATH and, in the environment:
#   LAMBDA_HOST     tls://faas.example.com:50051
#   LAMBDA_API_KEY  a deployer key (lambdactl keys create --name ci --role deployer)
#   LAMBDA_TLS_CA   the server's CA certificate, unless it is from a public CA
# Arguments: function folders (default: every folder under functions/). A folder may
# hold smoke.json: the payload of a test invocation that must succeed after deploy.
# Exit: 0 all deployed and healthy; else the first failing lambdactl exit code.
set -uo pipefail

: "${LAMBDA_HOST:?set LAMBDA_HOST, e.g. tls://faas.example.com:50051}"
if [ -z "${LAMBDA_API_KEY:-}" ] && [ -z "${LAMBDA_API_KEY_FILE:-}" ]; then
  echo "set LAMBDA_API_KEY (or LAMBDA_API_KEY_FILE) to a deployer key" >&2
  exit 78
fi

if [ "$#" -eq 0 ]; then
  set -- functions/*/
fi

failed=0
for folder in "$@"; do
  folder="${folder%/}"
  name="$(basename "$folder")"
  echo "::group::deploy $name"
  lambdactl deploy "$folder" --name "$name"
  code=$?
  echo "::endgroup::"
  if [ "$code" -ne 0 ]; then
    echo "deploy of $name failed (exit $code); the previous version stays live" >&2
    [ "$failed" -eq 0 ] && failed=$code
    continue
  fi
  if [ -f "$folder/smoke.json" ]; then
    lambdactl invoke "$name" --data-file "$folder/smoke.json" >/dev/null
    code=$?
    if [ "$code" -ne 0 ]; then
      echo "smoke test of $name failed (exit $code): rolling back" >&2
      lambdactl rollback "$name" || echo "rollback of $name failed: no earlier version" >&2
      [ "$failed" -eq 0 ] && failed=$code
      continue
    fi
    echo "$name: smoke test passed"
  fi
done
exit "$failed"
