#!/usr/bin/env bash
# What the test suite needs from the machine beyond Python packages (Debian, run as root):
#   - espeak-ng: speech for the predict tests' real face videos
#   - chromium: opens the predict report (index.html) headless
#   - a single-node SLURM (tests/cluster/slurm.sh up) for the `slurm` tests
# Idempotent: installs only what is missing, and `slurm.sh up` on a running cluster is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests/setup-machine.sh: missing ${missing[*]}; run as root (apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    echo "[setup-machine] installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(id -u)" -eq 0 ]; then
    bash tests/cluster/slurm.sh up
else
    echo "[setup-machine] not root: no SLURM brought up (the slurm tests are skipped outside CI)"
fi
