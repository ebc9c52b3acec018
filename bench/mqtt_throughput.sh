#!/usr/bin/env bash
# bench/mqtt_throughput.sh [N]: N messages with distinct ids published at once
# through Mosquitto (127.0.0.1:1883, QoS 1) to the mqtt_gateway example (release build:
# cargo build --release -p idemkv-consumers --examples), timed until the sink
# holds N effects; the example prints where its delivery time went when it
# stops. docs/benchmarks.md has the figures.
# End-to-end deduplicated messages per second through Mosquitto.
set -euo pipefail
N=${1:-3000}
G=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)/target/release/examples/mqtt_gateway
d=$(mktemp -d)
python3 -c "
import json
for i in range($N): print(json.dumps({'msg_id': 'm%d' % i, 'celsius': i % 40}))
" > $d/lines
$G --db $d/g.redb --sink $d/s.jsonl --client-id idemkv-measure-$$ > $d/out 2> $d/err &
pid=$!
until grep -q subscribed $d/out; do sleep 0.05; done
start=$(date +%s.%N)
mosquitto_pub -V mqttv5 -q 1 -i idemkv-measure-pub-$$ -t sensors/dev-1/readings -l < $d/lines
until [ "$(wc -l < $d/s.jsonl 2>/dev/null || echo 0)" -ge $N ]; do sleep 0.01; done
end=$(date +%s.%N)
kill -INT $pid; wait $pid || true
grep timings $d/err || true
python3 -c "print('mqtt: %d messages in %.2f s = %.0f msg/s' % ($N, $end-$start, $N/($end-$start)))"
# end the session
mosquitto_sub -V mqttv5 -i idemkv-measure-$$ -c -x 0 -t x -E >/dev/null 2>&1 || true
rm -rf $d
