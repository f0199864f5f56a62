-- wrk script for scripts/bench_http.py: every wrk thread drives exactly ONE connection
-- (wrk -tN -cN), so a thread's voucher list is that connection's, sent strictly in order:
-- each request waits for the previous answer (no pipelining), no self-inflicted 409s.
-- The index advances on each answer, not in request(): wrk calls request() once more on
-- thread 0 before the run (to count pipelined requests), and a request re-sent after a
-- reconnect must be the same voucher (an idempotent replay), not the next one.
-- args: <voucher dir> <first line index (1-based)>
-- File conn<k>.txt holds "path<TAB>json body" lines for connection k (its own channel).
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local dir, first = args[1], tonumber(args[2] or "1")
  reqs = {}
  idx = first - 1
  ok, bad, exhausted = 0, 0, 0
  codes = ""
  for line in io.lines(dir .. "/conn" .. id .. ".txt") do
    local path, body = line:match("^([^\t]+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  spare = wrk.format("GET", "/healthz")
end

function request()
  if idx >= #reqs then
    return spare
  end
  return reqs[idx + 1]
end

function response(status, headers, body)
  if idx >= #reqs then
    exhausted = exhausted + 1
    return
  end
  idx = idx + 1
  if status == 201 then
    ok = ok + 1
  else
    bad = bad + 1
    if #codes < 200 then codes = codes .. status .. " " end
  end
end

function done(summary, latency, requests)
  local ok_t, bad_t, ex_t, used, codes_t = 0, 0, 0, {}, ""
  for _, t in ipairs(threads) do
    ok_t = ok_t + t:get("ok")
    bad_t = bad_t + t:get("bad")
    ex_t = ex_t + t:get("exhausted")
    used[#used + 1] = tostring(t:get("idx"))
    codes_t = codes_t .. t:get("codes")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"ok":%d,"bad":%d,"exhausted":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"last_index":[%s],"bad_codes":"%s"}\n',
    summary.duration, summary.requests, ok_t, bad_t, ex_t,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    table.concat(used, ","), codes_t))
end
