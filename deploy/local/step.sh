#!/usr/bin/env bash
# step.sh NAME COMMAND...: one set-up step of `make`, quiet while it works (its output goes to
# deploy/local/.cache/setup/NAME.log) and one line when it ends: "setup: NAME 42 s". On failure the log's
# last lines and "setup: NAME FAILED" go to stderr and the command's exit status is kept, so a `make -j`
# running several steps at once stops loudly. STEP_SKIP_STATUS=N: exit status N means "not possible on
# this host" (the log's last line says why): reported as skipped, not a failure.
set -uo pipefail
name="$1"
shift
logs="${HOOKFLEET_SETUP_LOGS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.cache/setup}"
mkdir -p "$logs"
log="$logs/$(echo "$name" | tr -cs "A-Za-z0-9" - | sed "s/-*$//").log"
start=$SECONDS
"$@" >"$log" 2>&1 </dev/null
rc=$?
took=$((SECONDS - start))
if [ "$rc" -eq 0 ]; then
  echo "setup: $name $took s"
elif [ -n "${STEP_SKIP_STATUS:-}" ] && [ "$rc" -eq "$STEP_SKIP_STATUS" ]; then
  echo "setup: $name skipped after $took s: $(tail -n 1 "$log")"
  rc=0
else
  tail -n 40 "$log" | sed "s/^/[$name] /" >&2
  echo "setup: $name FAILED after $took s (exit $rc); whole log: $log" >&2
fi
exit "$rc"
