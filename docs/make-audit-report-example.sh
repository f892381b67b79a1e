#!/usr/bin/env bash
# Regenerate the example auditor's report committed under docs/ from a fresh demo run:
#   docs/audit-report-example.id.html, docs/audit-report-example.en.html, docs/audit-report-example.id.pdf
# (docs/AUDIT.md section 14.4). The demo's keys and times are new on every run, so the files change each time;
# tests/unit/audit/test_html_report.py::test_committed_example_is_a_current_report checks their structure.
#
#   bash docs/make-audit-report-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
demo=/tmp/xchg-audit-report-example
rm -rf "$demo"
.venv/bin/gateway demo --once --dir "$demo" --log-file "$demo.log" >/dev/null
for lang in id en; do
  pdf=()
  [[ $lang == id ]] && pdf=(--pdf docs/audit-report-example.id.pdf)
  .venv/bin/gateway audit report --log "$demo/notary/log" --vkey "$demo/notary/notary.vkey" \
    --lang "$lang" --timezone Asia/Jakarta --out "docs/audit-report-example.$lang.html" "${pdf[@]}" >/dev/null
done
rm -rf "$demo" "$demo.log"
