-- wrk script of bench=serve: POST /rank with the bodies of a file (one JSON body a line), in turn, each thread
-- from its own offset; at the end one JSON line of the figures (latencies in microseconds).
-- wrk -t1 -c4 -d20s -s wrk_bodies.lua http://127.0.0.1:PORT -- BODIES_FILE [PATH]
local requests, i = {}, 0
local threads = {}

function setup(thread)
   thread:set("offset", #threads * 7919)
   table.insert(threads, thread)
end

function init(args)
   local path = args[2] or "/rank"
   local f = assert(io.open(args[1], "rb"))
   for line in f:lines() do
      if #line > 0 then
         requests[#requests + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, line)
      end
   end
   f:close()
   i = (offset or 0) % #requests
end

function request()
   i = i % #requests + 1
   return requests[i]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format('WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "status_errors": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d}\n', summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout))
end
