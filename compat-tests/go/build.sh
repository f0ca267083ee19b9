#!/usr/bin/env bash
# Builds the Go client checks (franz-go, sarama) of compat-tests/test_go_clients.py into bin/. The modules
# come from the Go module proxy, pinned by go.mod / go.sum, into Go's module cache (~/go/pkg/mod, outside
# the source tree). Called by `make test`; with everything cached it only relinks, in a few seconds.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1; then
    echo "go/build.sh: Go 1.24 or newer is needed (https://go.dev/dl, or /usr/local/go/bin on the PATH)" >&2
    exit 1
fi
go build -o bin/ ./franz ./sarama
