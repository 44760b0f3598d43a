#!/usr/bin/env bash
# Stop the daemons .ci/slurm-up.sh started (by the pids it recorded); leaves packages and config.
set -uo pipefail
STATE_DIR="${MASQCLIP_SLURM_STATE:-/run/masqclip-slurm}"
for name in slurmd slurmctld munged; do
    pidfile="$STATE_DIR/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm-down: stopping $name (pid $pid)" >&2
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
done
