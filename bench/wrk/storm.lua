-- A retry storm: every request reuses one of 16 keys with the same payload,
-- so after the first of each all are replays (or wait for the first).
-- Argument: a run label.
dofile(os.getenv("WRK_DIR") .. "/report.lua")

function init(args)
  label = args[1] or "storm"
  math.randomseed(thread_id * 7919)
end

function request()
  return wrk.format("POST", "/v1/charges",
    headers_for(label .. "-" .. math.random(1, 16)), '{"amount":1200}')
end

function done(summary, latency, requests)
  report(summary, latency)
end
