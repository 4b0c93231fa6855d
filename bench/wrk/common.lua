-- Shared by every Huizhen wrk scenario (bench/api.py prepends it to the scenario script).
-- Counts non-2xx responses per thread and prints one machine-readable summary line at the end.

local threads = {}
local next_index = 0

function setup(thread)
  thread:set("thread_index", next_index)
  next_index = next_index + 1
  table.insert(threads, thread)
end

bad = 0
first_error = ""

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_error == "" then
      first_error = tostring(status) .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local non2xx, overflow, first = 0, 0, ""
  for _, t in ipairs(threads) do
    non2xx = non2xx + (t:get("bad") or 0)
    overflow = overflow + (t:get("overflow") or 0)
    local f = t:get("first_error")
    if first == "" and f and f ~= "" then
      first = f
    end
  end
  local e = summary.errors
  io.write(string.format(
    'HZBENCH {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d, "status": %d, "non2xx": %d, "overflow": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, non2xx, overflow, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
  if first ~= "" then
    io.write("HZBENCH_FIRST_ERROR " .. string.gsub(first, "\n", " ") .. "\n")
  end
end
