-- wrk script for bench/run.sh: POSTs a JSON body and writes a one-line JSON summary.
--
-- Configured through the environment (the script's top level runs in every wrk thread and in
-- the main thread, which is where done() runs and where wrk's `init(args)` is never called):
--   WRK_BODY  the request body (required)
--   WRK_OUT   file that receives the summary line (optional; stdout otherwise)
-- Latencies are in microseconds, as wrk records them.

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or error("WRK_BODY is not set")
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.2f,"lat_stdev_us":%.2f,"lat_min_us":%d,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9))
  local path = os.getenv("WRK_OUT")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(line, "\n")
    f:close()
  else
    io.write(line, "\n")
  end
end
