#!/usr/bin/env bash
# The whole ferry test suite, on Deno and on Bun.
#
#   bash tests/run.sh                 # unit + e2e + adversarial, Deno then Bun
#   bash tests/run.sh --deno-only     # only Deno
#   bash tests/run.sh --bun-only      # only Bun
#   bash tests/run.sh --quick         # tests/unit only
#   bash tests/run.sh [flags] PATH... # only these test files / directories
#
# Test files are the `*_test.ts` files under tests/unit, tests/e2e, tests/adversarial and
# tests/netem (or under the given PATHs); tests/netem is the network-fault suite, which needs
# root and runs under Deno only (it skips under Bun). The same explicit file list is passed
# to `deno test -A` and to `bun test`, so both runtimes run exactly the same files and
# node_modules is never scanned.
#
# Environment:
#   FERRY_TEST_TIMEOUT   per-test timeout in milliseconds (default 30000). Passed to
#                        `bun test --timeout`; Deno has no per-test timeout flag, so it is
#                        only exported for test helpers to use.
#   FERRY_SUITE_TIMEOUT  wall-clock limit in seconds for each runtime's whole run
#                        (default 600); a runner that exceeds it is killed and counted
#                        as failed.
#
# The last line printed is the summary, exactly `N passed, N failed`, summed over the
# runtimes that ran:
#   What is counted is leaf tests: a test that has no sub-tests of its own. This makes the
#   two runtimes agree on node:test files, where Deno turns describe() into a test and
#   it() into t.step() steps, while Bun counts only the it()s.
#   Deno: read from the per-test lines of its report (`name ... ok|FAILED|ignored`,
#         indented per step level): a result line that closes a `name ...` header at the
#         same indent is a parent (a describe() or a test with t.step()s) and is not
#         counted; every other result line is a leaf. Lines between `------- output -------`
#         markers (what tests print) are skipped. If no such line can be read, the closing
#         line `ok | 4 passed (91 steps) | 0 failed` is used instead (top-level tests only).
#   Bun:  read from its closing ` 91 pass` / ` 0 fail` lines; every test()/it() counts, a
#         describe() does not.
#   Ignored/skipped/todo tests are counted in neither figure (they are shown per runtime).
#   A runner that exits non-zero without reporting any failed test (type-check error,
#   crash, unhandled error between tests, timeout) adds 1 to "failed".
#   A runner that exits 0 but ran no test adds 1 to "failed" and fails the run.
# Exit status: 0 only if every selected runtime passed and at least one test ran.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

run_deno=1
run_bun=1
quick=0
paths=()
while (($#)); do
  case "$1" in
    --deno-only) run_bun=0 ;;
    --bun-only) run_deno=0 ;;
    --quick) quick=1 ;;
    -h | --help)
      sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    --) shift; paths+=("$@"); break ;;
    -*) echo "tests/run.sh: unknown option: $1 (try --help)" >&2; exit 2 ;;
    *) paths+=("$1") ;;
  esac
  shift
done
if ((run_deno == 0 && run_bun == 0)); then
  echo "tests/run.sh: --deno-only and --bun-only together select nothing" >&2
  exit 2
fi

bash scripts/ensure-tools.sh || { echo "tests/run.sh: could not install deno/bun" >&2; exit 1; }
export PATH="$root/node_modules/.bin:$PATH"
export NO_COLOR=1
export FERRY_TEST_TIMEOUT="${FERRY_TEST_TIMEOUT:-30000}"
suite_timeout="${FERRY_SUITE_TIMEOUT:-600}"

# --- collect test files -------------------------------------------------------
user_paths=${#paths[@]}
if ((user_paths == 0)); then
  if ((quick)); then paths=(tests/unit); else paths=(tests/unit tests/e2e tests/adversarial tests/netem); fi
fi
files=()
searched=()
for p in "${paths[@]}"; do
  p="${p#./}"
  if [[ -f "$p" ]]; then
    files+=("$p")
  elif [[ -d "$p" ]]; then
    searched+=("$p")
    while IFS= read -r f; do files+=("$f"); done < <(
      find "$p" -type d -name node_modules -prune -o -type f -name '*_test.ts' -print | LC_ALL=C sort
    )
    # Deno would also pick up foo.test.ts, but this suite only runs *_test.ts: say so.
    while IFS= read -r f; do
      echo "tests/run.sh: warning: $f is not run (test files must be named *_test.ts)" >&2
    done < <(find "$p" -type d -name node_modules -prune -o -type f \( -name '*.test.ts' -o -name 'test.ts' \) -print)
  elif ((user_paths)); then
    echo "tests/run.sh: no such file or directory: $p" >&2
    exit 2
  fi
done
if ((${#files[@]} == 0)); then
  echo "tests/run.sh: ERROR: no test files (*_test.ts) found in: ${paths[*]}" >&2
  echo "tests/run.sh: refusing to report success for a suite that ran nothing" >&2
  echo "0 passed, 0 failed"
  exit 1
fi
echo "tests/run.sh: ${#files[@]} test file(s): ${files[*]}"

logdir="tests/artifacts"
mkdir -p "$logdir"

total_pass=0
total_fail=0
overall=0
breakdown=()

# Run "$@" with a wall-clock limit, streaming output to the terminal and into $log.
# Sets $rc and $elapsed. `timeout` puts the runner in its own process group (so that it
# can kill the runner's children too); it therefore gets no Ctrl-C from the terminal,
# and the trap below forwards INT/TERM/HUP to it.
runner_pidfile="$(mktemp)"
trap 'rm -f "$runner_pidfile"' EXIT
on_signal() {
  local pid
  pid="$(cat "$runner_pidfile" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
  echo "tests/run.sh: interrupted" >&2
  exit 130
}
trap on_signal INT TERM HUP
run_logged() {
  local log="$1"
  shift
  local t0=$SECONDS
  : >"$runner_pidfile"
  (
    if command -v timeout >/dev/null 2>&1; then
      bash -c 'echo $$ >"$0"; exec "$@"' "$runner_pidfile" \
        timeout --kill-after=15 "$suite_timeout" "$@" 2>&1 | tee "$log"
    else
      bash -c 'echo $$ >"$0"; exec "$@"' "$runner_pidfile" "$@" 2>&1 | tee "$log"
    fi
    exit "${PIPESTATUS[0]}"
  ) &
  wait "$!"
  rc=$?
  : >"$runner_pidfile"
  elapsed=$((SECONDS - t0))
  if ((rc == 124 || rc == 137)); then
    echo "tests/run.sh: $1 did not finish within FERRY_SUITE_TIMEOUT=${suite_timeout}s and was killed" | tee -a "$log"
  fi
}

# Strip ANSI escapes in case a runner colours output despite NO_COLOR.
plain() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1"; }

# Count leaf results in Deno's pretty report; prints "passed failed ignored".
deno_leaves() {
  awk '
    /^------- output -------$/ { skip = 1; next }
    /^----- output end -----$/ { skip = 0; next }
    skip { next }
    /^ (ERRORS|FAILURES) $/ { exit }
    {
      match($0, /^ */); ind = RLENGTH; rest = substr($0, ind + 1)
      # "name ..." opens a test that has steps (or whose printed output follows).
      if (rest ~ / \.\.\.$/) {
        if (sp > 0 && ind > sind[sp]) kids[sp] = 1
        sp++; sind[sp] = ind; sname[sp] = substr(rest, 1, length(rest) - 4); kids[sp] = 0; next
      }
      if (match(rest, / \.\.\. (ok|FAILED|ignored)( |$)/)) {
        name = substr(rest, 1, RSTART - 1); split(substr(rest, RSTART + 5), w, " ")
        if (sp > 0 && sind[sp] == ind && sname[sp] == name) {   # closes an opened test
          sp--
          if (kids[sp + 1]) next                                # a parent: not counted
        } else if (sp > 0 && ind > sind[sp]) kids[sp] = 1
        if (w[1] == "ok") p++; else if (w[1] == "FAILED") f++; else ig++
      }
    }
    END { print p + 0, f + 0, ig + 0 }'
}

# Record one runtime's result: tally NAME RC PASSED FAILED EXTRA
tally() {
  local name="$1" rc="$2" pass="$3" fail="$4" extra="$5" note=""
  if ((rc != 0 && fail == 0)); then
    fail=1
    note=" (runner exited $rc without a failed test: counted as 1 failed; see $logdir/last-$name.log)"
  fi
  if ((rc == 0 && pass == 0)); then
    fail=$((fail + 1))
    rc=1
    note=" (runner ran no test: counted as 1 failed)"
  fi
  ((rc != 0)) && overall=1
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  breakdown+=("$name: $pass passed, $fail failed${extra:+, $extra} in ${elapsed}s, exit $rc$note")
}

if ((run_deno)); then
  echo
  echo "=== deno $(deno --version | awk 'NR == 1 { print $2 }'): deno test -A (${#files[@]} files) ==="
  log="$logdir/last-deno.log"
  run_logged "$log" deno test -A "${files[@]}"
  # Closing line, e.g. "ok | 4 passed (91 steps) | 0 failed | 1 ignored (52ms)"
  #              or  "FAILED | 2 passed (2 steps) | 1 failed | 1 ignored (89ms)".
  line="$(plain "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1)"
  # Leaf tests from the per-test lines: "passed failed ignored".
  read -r p f ign < <(plain "$log" | deno_leaves)
  if ((p + f + ign == 0)) && [[ -n "$line" ]]; then
    p="$(sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' <<<"$line")"
    f="$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$line")"
    ign="$(sed -nE 's/.*\| ([0-9]+) ignored.*/\1/p' <<<"$line")"
    extra="counted from the closing line: top-level tests only"
  else
    extra=""
  fi
  [[ -n "$ign" && "$ign" != 0 ]] && extra="${extra:+$extra, }$ign ignored"
  tally deno "$rc" "${p:-0}" "${f:-0}" "$extra"
fi

if ((run_bun)); then
  echo
  echo "=== bun $(bun --version): bun test (${#files[@]} files) ==="
  log="$logdir/last-bun.log"
  bun_files=()
  for f in "${files[@]}"; do bun_files+=("./$f"); done # "./" makes bun treat them as paths, not name filters
  run_logged "$log" bun test --timeout "$FERRY_TEST_TIMEOUT" "${bun_files[@]}"
  # Closing lines, e.g. " 12 pass", " 1 skip", " 0 fail", "Ran 13 tests across 2 files."
  p="$(plain "$log" | sed -nE 's/^ *([0-9]+) pass$/\1/p' | tail -n 1)"
  f="$(plain "$log" | sed -nE 's/^ *([0-9]+) fail$/\1/p' | tail -n 1)"
  s="$(plain "$log" | sed -nE 's/^ *([0-9]+) skip$/\1/p' | tail -n 1)"
  t="$(plain "$log" | sed -nE 's/^ *([0-9]+) todo$/\1/p' | tail -n 1)"
  extra=""
  [[ -n "$s" && "$s" != 0 ]] && extra="$s skipped"
  [[ -n "$t" && "$t" != 0 ]] && extra="${extra:+$extra, }$t todo"
  tally bun "$rc" "${p:-0}" "${f:-0}" "$extra"
fi

echo
for b in "${breakdown[@]}"; do echo "tests/run.sh: $b"; done
((overall != 0)) && echo "tests/run.sh: FAILED"
echo "$total_pass passed, $total_fail failed"
exit "$overall"
