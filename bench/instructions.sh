#!/usr/bin/env bash
# Instructions per operation for the CPU-bound paths, counted by callgrind:
# the same on every run of the same binary, whatever else the machine does,
# so a regression shows where timings drown in noise.
#
#   bench/instructions.sh            # every operation
#   bench/instructions.sh replay_cached mismatch
#
# Each operation runs at two counts; the difference divided by the extra
# count is the cost of one operation (the setup cancels out).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p idemkv-bench --bin instructions
driver=target/release/instructions
operations=("$@")
if [ ${#operations[@]} -eq 0 ]; then
  operations=(replay_cached replay_uncached mismatch in_progress encode decode)
fi
low=1000
high=3000

count() { # operation n -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$driver" "$1" "$2" 2>&1 \
    | awk '/Collected :/ { print $NF }'
}

echo "| operation | instructions per operation |"
echo "|---|---|"
for op in "${operations[@]}"; do
  a=$(count "$op" "$low")
  b=$(count "$op" "$high")
  echo "| $op | $(( (b - a) / (high - low) )) |"
done
