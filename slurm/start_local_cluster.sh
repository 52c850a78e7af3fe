#!/usr/bin/env bash
# Start a single-node SLURM cluster on this host: munged, slurmctld and slurmd, with a slurm.conf
# generated from the host's cores and memory (slurm/slurm.conf.in). Needs root and
# slurm/install_local_cluster.sh. Everything (config, state, logs, pids) lives in one folder:
#
#   bash slurm/start_local_cluster.sh [STATE_DIR]      default: $VISIONLAB_SLURM_DIR or /tmp/visionlab-slurm
#   export SLURM_CONF=STATE_DIR/slurm.conf              (printed at the end; sbatch, srun, squeue read it)
#   bash slurm/stop_local_cluster.sh [STATE_DIR]        stops exactly the daemons this script started
#
# Ports: SLURMCTLD_PORT (6817) and SLURMD_PORT (6818). Partition name: SLURM_PARTITION (local).
# The daemons' pids are written to STATE_DIR/pids, one "<name> <pid>" per line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="$(realpath -m "${1:-${VISIONLAB_SLURM_DIR:-/tmp/visionlab-slurm}}")"
ctld_port="${SLURMCTLD_PORT:-6817}"
slurmd_port="${SLURMD_PORT:-6818}"
partition="${SLURM_PARTITION:-local}"
conf="$state/slurm.conf"
pids="$state/pids"

die() { echo "start_local_cluster.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "the SLURM daemons must run as root (slurmd starts jobs as their users); run it as root"
for cmd in munged munge unmunge slurmctld slurmd sinfo scontrol runuser; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]] \
        || die "$cmd is not installed; run: bash slurm/install_local_cluster.sh"
done
export PATH="$PATH:/usr/sbin:/sbin"

alive() {  # alive NAME PID: the pid runs a program called NAME
    [[ -n "${2:-}" && -r "/proc/$2/comm" ]] && [[ "$(cat "/proc/$2/comm")" == "$1"* ]]
}

if [[ -f "$pids" ]]; then
    running=0
    while read -r name pid; do alive "$name" "$pid" && running=$((running + 1)); done <"$pids"
    if [[ $running -eq 3 ]]; then
        echo "local SLURM cluster already running ($state)"
        echo "export SLURM_CONF=$conf"
        exit 0
    fi
    [[ $running -eq 0 ]] || die "part of a cluster from $state is still running; run slurm/stop_local_cluster.sh $state first"
    rm -f "$pids"
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$ctld_port" "$slurmd_port"; do
    ! port_busy "$port" || die "port $port is in use (another slurmctld/slurmd?); set SLURMCTLD_PORT / SLURMD_PORT"
done

mkdir -p "$state/ctld" "$state/slurmd" "$state/munge"
chmod 0755 "$state"

# --- munge: our own munged with its own socket; the system's key when it has one ---------------
chown munge:munge "$state/munge"
# munged wants its socket folder owned by munge and passable by all (jobs' users reach the socket).
chmod 0711 "$state/munge"
key=/etc/munge/munge.key
if [[ ! -r "$key" ]]; then
    key="$state/munge/munge.key"
    if [[ ! -f "$key" ]]; then
        mungekey --create --keyfile="$key" >/dev/null
        chown munge:munge "$key"
        chmod 0600 "$key"
    fi
fi
socket="$state/munge/munge.socket"
runuser -u munge -- munged --socket="$socket" --key-file="$key" \
    --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" \
    --seed-file="$state/munge/munged.seed" \
    || die "munged did not start; see $state/munge/munged.log"
echo "munged $(cat "$state/munge/munged.pid")" >>"$pids"
munge --socket="$socket" -n | unmunge --socket="$socket" >/dev/null \
    || die "munge credentials do not round-trip (munge -n | unmunge); see $state/munge/munged.log"

# --- slurm.conf from the host's resources ----------------------------------------------------------
host="$(hostname -s)"
cpus="$(nproc)"
mem_total_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
memory_mb=$(( mem_total_mb * 9 / 10 ))
sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY_MB@|$memory_mb|g" \
    -e "s|@MEM_PER_CPU_MB@|$(( memory_mb / cpus ))|g" -e "s|@STATE_DIR@|$state|g" \
    -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
    -e "s|@MUNGE_SOCKET@|$socket|g" -e "s|@PARTITION@|$partition|g" \
    "$here/slurm.conf.in" >"$conf.tmp"
mv "$conf.tmp" "$conf"
export SLURM_CONF="$conf"

# --- the daemons -------------------------------------------------------------------------------------
slurmctld -f "$conf" || die "slurmctld did not start; see $state/slurmctld.log"
for _ in $(seq 50); do [[ -s "$state/slurmctld.pid" ]] && break; sleep 0.2; done
echo "slurmctld $(cat "$state/slurmctld.pid")" >>"$pids"
slurmd -f "$conf" -N "$host" || die "slurmd did not start; see $state/slurmd.log"
for _ in $(seq 50); do [[ -s "$state/slurmd.pid" ]] && break; sleep 0.2; done
echo "slurmd $(cat "$state/slurmd.pid")" >>"$pids"

for _ in $(seq 60); do
    node_state="$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)"
    [[ "$node_state" == idle* || "$node_state" == mixed* || "$node_state" == allocated* ]] && break
    sleep 0.5
done
[[ "$node_state" == idle* || "$node_state" == mixed* || "$node_state" == allocated* ]] \
    || die "node $host is '${node_state:-not answering}' after 30 s; see $state/slurmctld.log and $state/slurmd.log"

echo "local SLURM cluster up: node $host ($cpus CPUs, $memory_mb MiB), partition $partition, state in $state"
echo "export SLURM_CONF=$conf"
