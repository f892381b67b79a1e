#!/usr/bin/env bash
# Download the Go verifier's pinned modules (go.mod / go.sum: golang.org/x/mod) into
# tests/independent/go/.cache/mod (git-ignored) through the Go module proxy. Skipped when they are there.
# Run by ./xchg test; the test itself builds with GOPROXY=off.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
go="$(command -v go || true)"
if [[ -z "$go" && -x /usr/local/go/bin/go ]]; then
  go=/usr/local/go/bin/go
fi
if [[ -z "$go" ]]; then
  echo "tests/independent/go/fetch.sh: no go on PATH (.ci/install-system-deps installs golang-go)" >&2
  exit 1
fi
export GOMODCACHE="$here/.cache/mod" GOCACHE="$here/.cache/build" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
  GOTELEMETRY=off
stamp="$here/.cache/.fetched"
if [[ -f "$stamp" && "$stamp" -nt "$here/go.sum" ]]; then
  exit 0
fi
cd "$here"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$go" mod download >"$log" 2>&1; then
  cat "$log" >&2
  echo "tests/independent/go/fetch.sh: go mod download failed (needs Go >= 1.26 for golang.org/x/mod v0.43.0)" >&2
  exit 1
fi
touch "$stamp"
