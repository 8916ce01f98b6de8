#!/usr/bin/env bash
# Runs the network-fault suite on its own (as root) and prints tests/artifacts/netem-report.md:
#
#   sudo bash scripts/netem/run.sh
#
# Installs iproute2 and nftables first when `ip` / `nft` are missing (Debian). The suite runs
# under Deno; it starts server.ts and send.ts on both runtimes itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/ensure-tools.sh
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
NO_COLOR=1 node_modules/.bin/deno test -A tests/netem/
