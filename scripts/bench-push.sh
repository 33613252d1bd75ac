#!/usr/bin/env bash
# remote_write push cost for 100 tcp probes on loopback: bytes on the wire per sample and push
# CPU per 1,000 samples (steady state and backlog drain). Bounded: ITER requests (default 200,
# at most 5000). PROFILE=dev uses the debug build (no release compile); default is cargo's
# bench profile.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PROFILE:-bench}" = dev ]; then
  cargo bench --profile dev --bench push -- "$@"
else
  cargo bench --bench push -- "$@"
fi
