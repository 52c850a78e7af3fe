#!/usr/bin/env bash
# Install what a single-node SLURM cluster on this host needs: Debian's slurm-wlm and munge.
# Idempotent: returns at once when the daemons and client commands are already installed.
# Usage: bash slurm/install_local_cluster.sh        (as root, or with sudo available)
set -euo pipefail

needed=(munged munge slurmctld slurmd sbatch srun squeue scontrol sinfo)
missing=()
for cmd in "${needed[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]] || missing+=("$cmd")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm-wlm and munge are installed ($(slurmd -V))"
    exit 0
fi

if [[ $EUID -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "install_local_cluster.sh: missing ${missing[*]}; installing them needs root (or sudo)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_local_cluster.sh: missing ${missing[*]}; this script knows only apt-get (Debian/Ubuntu)." >&2
    echo "Install Slurm and MUNGE with your system's package manager." >&2
    exit 1
fi

echo "installing slurm-wlm and munge (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "installed: $(slurmd -V), $(munged --version 2>&1 | head -n1)"
