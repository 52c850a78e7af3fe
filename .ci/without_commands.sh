#!/usr/bin/env bash
# Run a command with some programs hidden from PATH, as on a machine that never installed them.
#   bash .ci/without_commands.sh srun sbatch -- make test
# Builds a folder of links to every other program on PATH and runs the command with only that
# folder on PATH, so a test that silently needs a hidden program fails here, not on a user's machine.
set -euo pipefail
hidden=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do hidden+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "usage: $0 PROGRAM... -- COMMAND..." >&2; exit 2; }
shift
farm=$(mktemp -d)
trap 'rm -rf "$farm"' EXIT
IFS=: read -r -a dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  for prog in "$dir"/*; do
    name=${prog##*/}
    [ -x "$prog" ] && [ ! -d "$prog" ] && [ ! -e "$farm/$name" ] || continue
    for h in "${hidden[@]}"; do [ "$name" = "$h" ] && continue 2; done
    ln -s "$prog" "$farm/$name"
  done
done
for h in "${hidden[@]}"; do
  if PATH="$farm" command -v "$h" >/dev/null 2>&1; then echo "could not hide $h" >&2; exit 2; fi
done
PATH="$farm" "$@"
