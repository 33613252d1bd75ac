#!/usr/bin/env bash
# WebSocket probe overhead on loopback: median probe time vs a bare tokio-tungstenite
# connect_async (+ close handshake) in the same run, and ping RTT as recorded by the probe vs a
# bare ping. Bounded: ITER iterations (default 300, at most 5000), loopback only.
# PROFILE=dev uses the debug build (no release compile); default is cargo's bench profile.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PROFILE:-bench}" = dev ]; then
  cargo bench --profile dev --bench websocket -- "$@"
else
  cargo bench --bench websocket -- "$@"
fi
