#!/usr/bin/env bash
# Where the threads' time goes under load: runs `tail` (64 threads, fresh
# keys; its first setting, the defaults, runs first) and reads each thread's
# /proc schedstat twice, 2.5 s and 7.5 s into the run. Prints, per thread
# name, the milliseconds of those 5 s spent on a core and waiting for one;
# the rest of a thread's 5 s it was blocked (an fsync, a lock, a reply).
#
#   bench/threads.sh
#   TAIL=/path/to/another/build/tail bench/threads.sh   # another build's tail
set -euo pipefail
cd "$(dirname "$0")/.."
tail_bin=${TAIL:-target/release/tail}
if [ -z "${TAIL:-}" ]; then
  cargo build --release -q -p idemkv-bench --bin tail
fi
# The client threads are unnamed: they bear the binary's name, cut to the
# 15 bytes a thread name keeps.
client=$(basename "$tail_bin" | cut -c1-15)

sample() {
  for task in /proc/"$1"/task/*; do
    name=$(cat "$task/comm" 2>/dev/null) || continue
    # The main thread bears the binary's name too; it only waits for the
    # clients, so it is listed apart from them.
    if [ "${task##*/}" = "$1" ]; then name=main; fi
    read -r on wait _ < "$task/schedstat" 2>/dev/null || continue
    echo "$name $on $wait"
  done
}

"$tail_bin" --seconds 8 --rounds 1 > /dev/null &
pid=$!
sleep 2.5
first=$(sample "$pid")
sleep 5
second=$(sample "$pid")
wait "$pid"

echo "| thread | count | on a core, ms of 5,000 | waiting for a core, ms |"
echo "|---|---|---|---|"
{ echo "$first" | sed 's/^/a /'; echo "$second" | sed 's/^/b /'; } | awk -v client="$client" '
  { name = ($2 == client) ? "client" : $2
    sign = ($1 == "a") ? -1 : 1
    on[name] += sign * $3; wait[name] += sign * $4
    if ($1 == "b") count[name]++ }
  END { for (n in on) printf "| %s | %d | %.0f | %.0f |\n", n, count[n], on[n] / 1e6, wait[n] / 1e6 }'
