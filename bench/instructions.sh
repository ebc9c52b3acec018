#!/usr/bin/env bash
# Instructions per operation for the CPU-bound paths, counted by callgrind:
# counts, unlike timings, do not move with whatever else the machine does,
# so a regression shows where timings drown in noise.
#
#   bench/instructions.sh            # every operation
#   bench/instructions.sh replay_cached mismatch
#   INSTRUCTIONS_DRIVER=path/to/instructions bench/instructions.sh   # another build's driver
#
# Callgrind counts only the driver's measured loop (--toggle-collect), so
# the setup (commits through threads whose timing varies) and other threads
# stay out; the count divided by the loop's length is one operation. The
# write-path operations count their committer threads too (each one's run
# whole), less a run of the same setup with an empty loop.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
driver=${INSTRUCTIONS_DRIVER:-target/release/instructions}
if [ -z "${INSTRUCTIONS_DRIVER:-}" ]; then
  cargo build --release -q -p idemkv-bench --bin instructions
fi
operations=("$@")
if [ ${#operations[@]} -eq 0 ]; then
  operations=(replay_cached replay_uncached mismatch in_progress encode decode cycle cycle_journal redb_random_insert redb_sequential_insert redb_get)
fi
count=2000

echo "| operation | instructions per operation |"
echo "|---|---|"
for op in "${operations[@]}"; do
  toggles=(--toggle-collect='*measured*')
  baseline=0
  case "$op" in
    cycle*)
      # Every committer thread's run is collected, the setup's too: a run
      # with an empty loop counts the setup alone, and is taken off.
      toggles+=(--toggle-collect='idemkv::committer::writer::serve')
      baseline=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "${toggles[@]}" \
        "$driver" "$op" 0 2>&1 | awk '/Collected :/ { print $NF }')
      ;;
  esac
  total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "${toggles[@]}" \
    "$driver" "$op" "$count" 2>&1 | awk '/Collected :/ { print $NF }')
  echo "| $op | $(( (total - baseline) / count )) |"
done
