-- wrk script: spread requests round robin over many signed paths (one per line of the file named
-- by the first script argument) and print a one-line JSON summary in done().
--   wrk -t1 -c50 -d10s -s loadtests/tokens.lua http://127.0.0.1:PORT -- paths.txt
-- The summary line starts with WRK_JSON; loadtests/wrk.py parses it. Latencies are microseconds.
-- No response() callback on purpose: defining one makes wrk parse every response for Lua and
-- would slow the load generator down (errors.status already counts every status above 399).

local requests_ = {}
local next_ = 1

function init(args)
  local file = assert(io.open(args[1], "r"))
  local headers = { ["User-Agent"] = args[2] or "Mozilla/5.0 (wrk benchmark)" }
  for line in file:lines() do
    if #line > 0 then
      requests_[#requests_ + 1] = wrk.format("GET", line, headers)
    end
  end
  file:close()
  assert(#requests_ > 0, "no paths in " .. args[1])
  -- Threads start at different offsets so that they do not send the same token at the same time.
  next_ = (math.floor(os.clock() * 1000003) % #requests_) + 1
end

function request()
  local r = requests_[next_]
  next_ = next_ + 1
  if next_ > #requests_ then next_ = 1 end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"p50": %.0f, "p90": %.0f, "p99": %.0f, "p999": %.0f, "max": %.0f, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
