#!/usr/bin/env bash
# summarize-go-test.sh: pass `go test -v` output through and end with "N passed, N failed".
# Exits non-zero when a test failed, the run failed (FAIL line, panic), or no test ran.
set -uo pipefail
pass=0 fail=0 skip=0 bad=0
while IFS= read -r line; do
  printf '%s\n' "$line"
  case "$line" in
    "--- PASS"*|"    --- PASS"*) ;;
  esac
  if [[ $line =~ ^---\ PASS ]]; then pass=$((pass + 1)); fi
  if [[ $line =~ ^---\ FAIL ]]; then fail=$((fail + 1)); fi
  if [[ $line =~ ^---\ SKIP ]]; then skip=$((skip + 1)); fi
  if [[ $line =~ ^FAIL || $line =~ ^panic: ]]; then bad=1; fi
done
echo "e2e: $pass passed, $fail failed, $skip skipped"
if ((fail > 0 || bad)); then exit 1; fi
if ((pass == 0)); then echo "no e2e test ran" >&2; exit 1; fi
if ((skip > 0)) && [[ ${CI:-} == true ]]; then echo "e2e tests were skipped in CI" >&2; exit 1; fi
exit 0
