#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (for the @pytest.mark.slurm test and trying the
# workflow's slurm profile). Idempotent: installs slurm-wlm + munge with apt if missing, writes
# /etc/slurm/slurm.conf, starts munged, slurmctld and slurmd unless they already run, then waits
# until the node is idle. Needs root. Stop everything with .ci/slurm-down.sh.
set -euo pipefail

STATE_DIR="${MASQCLIP_SLURM_STATE:-/run/masqclip-slurm}"  # pid files of the daemons we start
PARTITION="${MASQCLIP_SLURM_PARTITION:-debug}"
CLUSTER="${MASQCLIP_SLURM_CLUSTER:-masqclip}"
READY_TIMEOUT_S="${MASQCLIP_SLURM_READY_TIMEOUT:-60}"

log() { echo "slurm-up: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "must run as root (apt-get and the daemons need it)"; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE_DIR"
host="$(hostname)"
cpus="$(nproc)"
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
real_mb=$(( mem_mb * 95 / 100 ))  # a little under the machine's, as slurmd measures less

# --- munge -----------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    log "creating a munge key"
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    su -s /bin/sh munge -c "munged --pid-file=/run/munge/munged.pid"
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# --- slurm.conf ------------------------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
conf=/etc/slurm/slurm.conf
new_conf="$(cat <<CONF
# Written by masqclip .ci/slurm-up.sh: a one-node cluster on localhost.
ClusterName=$CLUSTER
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)"
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
    log "writing $conf"
    printf '%s\n' "$new_conf" > "$conf"
fi

# --- daemons ---------------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running /run/slurm/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld
    sleep 1
    cp /run/slurm/slurmctld.pid "$STATE_DIR/slurmctld.pid"
fi
if ! running /run/slurm/slurmd.pid; then
    log "starting slurmd"
    slurmd
    sleep 1
    cp /run/slurm/slurmd.pid "$STATE_DIR/slurmd.pid"
fi

for _ in $(seq "$READY_TIMEOUT_S"); do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    case "$state" in
        idle*|mix*|alloc*) log "node $host is $state (partition $PARTITION)"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
log "node $host not idle after ${READY_TIMEOUT_S}s (state: ${state:-none}); see /var/log/slurm/"
exit 1
