#!/usr/bin/env bash
# Speed and memory figures of egress-probe (release build unless PROFILE=dev), loopback only.
# RUNS (check runs, default 10) and REQUESTS (/probe runs per module, default 100) bound it.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
cargo build --locked --profile "$profile" --bin egress-probe >&2
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
exec python3 scripts/bench.py "target/$dir/egress-probe"
