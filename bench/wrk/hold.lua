-- Every connection sends the same key to /v1/hold, whose handler finishes
-- only after POST /release: one request claims, every other waits for it.
-- Argument: a run label.
dofile(os.getenv("WRK_DIR") .. "/report.lua")

function init(args)
  label = args[1] or "hold"
end

function request()
  return wrk.format("POST", "/v1/hold", headers_for(label .. "-held"), '{"amount":1200}')
end

function done(summary, latency, requests)
  report(summary, latency)
end
