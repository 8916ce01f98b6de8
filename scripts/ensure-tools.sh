#!/usr/bin/env bash
# Make sure node_modules/.bin/deno and node_modules/.bin/bun exist and are exactly
# the versions pinned in package.json (devDependencies), and that node_modules holds
# every package of package-lock.json at its locked version (so a pull that adds a
# dependency installs it). If not, run `npm ci` (or `npm install` when there is no
# package-lock.json).
#
# Idempotent and quick when everything is already in place (~0.1 s): one `node` run
# plus `deno --version` and `bun --version`. Prints to stderr only when it installs.
# Works from any working directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# One node run prints "DENO_VERSION BUN_VERSION LOCK" where the versions are the ones
# pinned in package.json (devDependencies) and LOCK is "ok" when
# node_modules/.package-lock.json (what npm installed) has every package of
# package-lock.json at the same version, else "stale". Optional packages for other
# platforms are never installed, so they may be absent; extra packages are fine.
state() {
  node -e '
    const fs = require("fs");
    const d = require("./package.json").devDependencies || {};
    let lock = "ok";
    if (fs.existsSync("package-lock.json")) {
      try {
        const want = require("./package-lock.json").packages || {};
        const have = require("./node_modules/.package-lock.json").packages || {};
        for (const [path, p] of Object.entries(want)) {
          if (path === "" || p.link) continue;
          const h = have[path];
          if (h ? h.version !== p.version : !p.optional) { lock = "stale"; break; }
        }
      } catch { lock = "stale"; }
    }
    console.log(`${d.deno || "?"} ${d.bun || "?"} ${lock}`);'
}

pinned() { state | awk '{ print $1, $2 }'; }

# Exit 0 when both tools are installed at the pinned versions and node_modules matches
# the lockfile.
tools_ok() {
  local want_deno want_bun lock have_deno have_bun
  read -r want_deno want_bun lock < <(state)
  [[ "$lock" == ok ]] || return 1
  [[ -x node_modules/.bin/deno && -x node_modules/.bin/bun ]] || return 1
  # `deno --version` prints "deno 2.9.6 (stable, ...)" on its first line.
  have_deno="$(node_modules/.bin/deno --version 2>/dev/null | awk 'NR == 1 { print $2 }')" || return 1
  # `bun --version` prints "1.4.5".
  have_bun="$(node_modules/.bin/bun --version 2>/dev/null | head -n 1)" || return 1
  [[ "$have_deno" == "$want_deno" && "$have_bun" == "$want_bun" ]]
}

tools_ok && exit 0

if ! command -v npm >/dev/null 2>&1; then
  echo "ensure-tools: npm not found; Node.js 20+ with npm is required to install Deno and Bun" >&2
  exit 1
fi

install() {
  # Another process may have installed while we waited for the lock.
  tools_ok && return 0
  if [[ -f package-lock.json ]]; then
    echo "ensure-tools: node_modules is missing or out of date: running npm ci (in $root) ..." >&2
    npm ci --no-audit --no-fund >&2
  else
    echo "ensure-tools: no package-lock.json; installing pinned deno/bun with npm install ..." >&2
    npm install --no-audit --no-fund >&2
  fi
  if ! tools_ok; then
    echo "ensure-tools: deno/bun still missing or not at the versions pinned in package.json ($(pinned)) after npm install" >&2
    return 1
  fi
}

# Serialize concurrent installs into the same checkout (npm ci deletes node_modules).
if command -v flock >/dev/null 2>&1; then
  lock="${TMPDIR:-/tmp}/ferry-ensure-tools-$(printf '%s' "$root" | cksum | cut -d ' ' -f 1).lock"
  exec 9>"$lock"
  flock 9
fi
install
