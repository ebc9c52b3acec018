#!/usr/bin/env bash
# bench/nats_throughput.sh [N]: N messages with distinct ids published at once
# through JetStream (127.0.0.1:4222) to the nats_consumer example (release build:
# cargo build --release -p idemkv-consumers --examples), timed until the sink
# holds N effects; the example prints where its delivery time went when it
# stops. docs/benchmarks.md has the figures.
# End-to-end deduplicated messages per second through JetStream.
set -euo pipefail
N=${1:-3000}
C=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)/target/release/examples/nats_consumer
d=$(mktemp -d)
S=MEASURE_$$
$C --db $d/c.redb --sink $d/s.jsonl --stream $S --subjects "measure$$.>" --consumer m > $d/out 2> $d/err &
pid=$!
until grep -q consuming $d/out; do sleep 0.05; done
start=$(date +%s.%N)
# publish N messages with nats CLI if present, else a tiny python client via raw protocol
python3 - "$N" "$$" <<'PY'
import socket, json, sys
n, pid = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", 4222))
s.recv(4096)
s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
buf = []
for i in range(n):
    payload = json.dumps({"msg_id": "n%d" % i, "amount": i % 90}).encode()
    buf.append(b"PUB measure%s.dev-1 %d\r\n%s\r\n" % (pid.encode(), len(payload), payload))
s.sendall(b"".join(buf) + b"PING\r\n")
data = b""
while b"PONG" not in data:
    data += s.recv(4096)
PY
until [ "$(wc -l < $d/s.jsonl 2>/dev/null || echo 0)" -ge $N ]; do sleep 0.01; done
end=$(date +%s.%N)
kill -INT $pid; wait $pid || true
python3 -c "print('nats: %d messages in %.2f s = %.0f msg/s' % ($N, $end-$start, $N/($end-$start)))"
grep timings $d/err || true
python3 - "$S" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", 4222)); s.recv(4096)
s.sendall(b'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' % sys.argv[1].encode())
data = b""
while b"PONG" not in data: data += s.recv(4096)
PY
rm -rf $d
