#!/usr/bin/env bash
# Builds ORY Hydra (the OpenID provider of the catalogue admin tests) into $1.
# `go install github.com/ory/hydra/v2@…` fails: Hydra's go.mod replaces
# github.com/ory/hydra-client-go/v2 by ./internal/httpclient, which the module
# zip does not contain. So: download the module, drop that replace (the
# published client module of the same API is used), build in a copy.
set -euo pipefail
out=${1:?usage: build-hydra.sh <output binary>}
version=v2.3.0
client=v2.2.1
src=$(cd /tmp && go mod download -json "github.com/ory/hydra/v2@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
cd "$work"
go mod edit -dropreplace github.com/ory/hydra-client-go/v2
go get "github.com/ory/hydra-client-go/v2@$client" >/dev/null 2>&1
mkdir -p "$(dirname "$out")"
# The sqlite tag brings the in-memory store (DSN=memory) the tests use.
go build -tags sqlite -o "$out" .
