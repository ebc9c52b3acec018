-- Shared by the scripts: a per-thread id for unique keys, and one RESULT
-- line that bench/http_load.sh reads.
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

function report(summary, latency)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.0f p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d timeouts=%d\n",
    summary.requests,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write, e.timeout))
end

function headers_for(key)
  return {
    ["Idempotency-Key"] = key,
    ["Authorization"] = "Bearer bench-client",
    ["Content-Type"] = "application/json",
  }
end
