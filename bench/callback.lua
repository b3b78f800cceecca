-- wrk script for the ingest benchmark: every request is a UNIQUE, valid
-- Group.CallbackAfterGroupDestroyed (its own GroupId and EventTime), signed.
-- wrk cannot compute sha256, so bench/ingest.py signs one RequestTime per round (Sign depends
-- only on token + RequestTime) and passes the query string in BENCH_QUERY; a round lasts far
-- less than IM_CALLBACK_MAX_SKEW_SECONDS (60 s), so the default skew is kept.
-- BENCH_PREFIX keeps group IDs apart between rounds and servers; done() prints one JSON line.

local query = os.getenv("BENCH_QUERY")
local prefix = os.getenv("BENCH_PREFIX") or "r"
local event_ms = tonumber(os.getenv("BENCH_EVENT_MS"))
local threads = {}
local counter = 0
-- `tid` is set per thread by setup() (thread:set), a global of that thread's Lua state.

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   tid = tid or 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   local gid = string.format("@TGS#2%s-%d-%d", prefix, tid, counter)
   local body = string.format(
      '{"CallbackCommand":"Group.CallbackAfterGroupDestroyed","GroupId":"%s","Type":"Public",' ..
      '"Owner_Account":"owner%d","Name":"bench group %d","EventTime":%d,' ..
      '"MemberList":[{"Member_Account":"owner%d"},{"Member_Account":"user%d"},{"Member_Account":"user%d"}]}',
      gid, counter % 997, counter, event_ms + counter, counter % 997, (counter * 7) % 100003, (counter * 13) % 100003)
   return wrk.format(nil, "/im/callback?" .. query, nil, body)
end

function done(summary, latency, requests)
   local non2xx = summary.errors.status
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
      summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
