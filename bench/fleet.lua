-- wrk script for bench/fleet.py: households posting live batches, or reading /v1/realtime.
--
--   wrk -s bench/fleet.lua <url> -- <mode> <households file> <template file> <rate/s or 0>
--       <threads> [<first household, 0-based>]
--
-- mode "ingest": each request is one household's live batch (the template, one sample
-- per line, filled with the sample time and rising registers), households taken in
-- turn from the first one given (a run goes on where the one before it stopped, so every
-- household uploads in turn over the runs); "read": GET /v1/realtime with a household's read token; "warm": the same GET
-- with its ingest token, refused (403) once the token check has cached the token, as a
-- server that has run for a while has every household's. A rate above 0 paces
-- each thread's requests to its share of it (open loop as long as the server keeps up;
-- the achieved rate is reported). done() prints one JSON line, "fleet-result: {...}".

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } fleet_timespec;
int clock_gettime(int clk, fleet_timespec *tp);
]]
local clock_spec = ffi.new("fleet_timespec")
local function now_s()
  ffi.C.clock_gettime(0, clock_spec) -- CLOCK_REALTIME: sample times are wall-clock
  return tonumber(clock_spec.tv_sec) + tonumber(clock_spec.tv_nsec) / 1e9
end

local SAMPLES = 5         -- the edge's live batch: five 2-second readings
local POLL_S = 2.0
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(lines, line) end
  end
  return lines
end

local mode, households, template, pace_s
local next_household = 1
local last_ts = {}
local next_due = nil
acked_samples = 0
answered = 0
failed = 0
statuses = ""

function init(args)
  mode = args[1]
  local all = read_lines(args[2])
  template = table.concat(read_lines(args[3]), "\n")
  local rate = tonumber(args[4]) or 0
  households = {}
  -- Each thread serves its own share of the households (every thread_count-th line).
  local shares = tonumber(args[5]) or 1
  for i, line in ipairs(all) do
    if (i - 1) % shares == index then
      local device, ingest_token, read_token = line:match("^(%S+) (%S+) (%S+)$")
      table.insert(households, {device = device, ingest = ingest_token, read = read_token})
    end
  end
  if rate > 0 then pace_s = shares / rate end
  local first = tonumber(args[6]) or 0
  if #households > 0 then next_household = math.floor(first / shares) % #households + 1 end
  local start = now_s() - 10
  for i = 1, #households do last_ts[i] = start end
end

local function iso(t)
  local whole = math.floor(t)
  local ms = math.floor((t - whole) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%03d+00:00", ms)
end

local function batch_body(i)
  local now = now_s()
  -- Readings two seconds apart ending now, never at or before the household's last.
  local step = POLL_S
  local first = now - (SAMPLES - 1) * POLL_S
  if first <= last_ts[i] then
    step = math.max(0.001, (now - last_ts[i]) / SAMPLES)
    first = last_ts[i] + step
  end
  local parts = {}
  for k = 0, SAMPLES - 1 do
    local t = first + k * step
    -- Registers rise by 1 kWh an hour from an arbitrary origin; power wanders.
    local hours = t / 3600
    local power = 400 + (math.floor(t * 7) % 3000)
    parts[k + 1] = string.format(template, iso(t), power, 10000 + hours, 6000 + hours / 2,
      4000 + hours / 2)
    last_ts[i] = t
  end
  return '{"samples":[' .. table.concat(parts, ",") .. "]}"
end

function request()
  local i = next_household
  next_household = next_household % #households + 1
  local h = households[i]
  if mode == "ingest" then
    return wrk.format("POST", "/v1/ingest", {
      ["Authorization"] = "Bearer " .. h.ingest,
      ["Content-Type"] = "application/json",
    }, batch_body(i))
  end
  local token = h.read
  if mode == "warm" then token = h.ingest end
  return wrk.format("GET", "/v1/realtime", {["Authorization"] = "Bearer " .. token})
end

function delay()
  if not pace_s then return 0 end
  local now = now_s()
  if next_due == nil or next_due < now - 1 then next_due = now end
  next_due = next_due + pace_s
  local wait = (next_due - now) * 1000
  if wait < 0 then return 0 end
  return wait
end

function response(status, headers, body)
  if status == 200 or (mode == "warm" and status == 403) then
    answered = answered + 1
    if mode == "ingest" then
      acked_samples = acked_samples + tonumber(body:match('"inserted":%s*(%d+)'))
    end
  else
    failed = failed + 1
    if #statuses < 200 then statuses = statuses .. status .. " " end
  end
end

function done(summary, latency, requests)
  local acked, ok, bad, codes = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    acked = acked + thread:get("acked_samples")
    ok = ok + thread:get("answered")
    bad = bad + thread:get("failed")
    codes = codes .. thread:get("statuses")
  end
  local errors = summary.errors
  io.write(string.format(
    'fleet-result: {"requests": %d, "seconds": %.3f, "answered": %d, "failed": %d, ' ..
    '"acked_samples": %d, "socket_errors": %d, "timeouts": %d, "statuses": "%s", ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, ok, bad, acked,
    errors.connect + errors.read + errors.write, errors.timeout, codes,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
