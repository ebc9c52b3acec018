-- Every request carries a new key: each is claimed, run and completed (two
-- durable commits, shared with concurrent requests by group commit).
-- Argument: a run label that keeps keys apart from earlier runs.
dofile(os.getenv("WRK_DIR") .. "/report.lua")

function init(args)
  label = args[1] or "fresh"
  n = 0
end

function request()
  n = n + 1
  return wrk.format("POST", "/v1/charges",
    headers_for(label .. "-" .. thread_id .. "-" .. n), '{"amount":1200}')
end

function done(summary, latency, requests)
  report(summary, latency)
end
