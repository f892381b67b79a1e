#!/usr/bin/env bash
# Copy Apache Kafka (broker and tools, pinned in pom.xml) and their runtime dependencies from Maven Central
# into tests/kafka/.cache/lib (git-ignored). Skipped when the folder is newer than pom.xml. Run by ./xchg test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$here/.cache/lib/.fetched"
if [[ -f "$stamp" && "$stamp" -nt "$here/pom.xml" ]]; then
  exit 0
fi
rm -rf "$here/.cache/lib" "$here/.cache/tools.jsa"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies >"$log" 2>&1; then
  cat "$log" >&2
  echo "tests/kafka/fetch.sh: Maven could not fetch Apache Kafka (tests/kafka/pom.xml)" >&2
  exit 1
fi
touch "$stamp"
