#!/usr/bin/env bash
# Install the Debian packages the tests drive for real when their command is missing:
# prometheus + promtool (the shipped rules and dashboard), kcat (the README's Kafka commands) and
# chromium (the backtest report in a real browser). Idempotent: prints nothing when all are there.
set -euo pipefail

declare -A package_of=([prometheus]=prometheus [promtool]=prometheus [kcat]=kcat [chromium]=chromium)
missing=()
for command in prometheus promtool kcat chromium; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${package_of[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')

as_root=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "ensure-tools: need root or sudo to install: $packages" >&2
        exit 1
    }
    as_root=(sudo)
fi
echo "ensure-tools: installing $packages" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
# shellcheck disable=SC2086  # one word per package
"${as_root[@]}" apt-get install -y -qq --no-install-recommends $packages >&2
