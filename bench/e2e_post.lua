-- wrk script for the end-to-end capacity benchmark: POST /sms/receive with a well-formed
-- verification SMS from a new UK mobile sender each time (valid unless the sender repeats), and a
-- pause of E2E_DELAY_MS before each request on a connection, which sets the offered rate.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local delay_ms = tonumber(os.getenv("E2E_DELAY_MS") or "0")
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

local counter = 0

function init(args)
  math.randomseed(os.time() + id)
  counter = math.random(0, 400000) + id * 500000
end

function delay()
  return delay_ms
end

request = function()
  counter = counter + 1
  local number = counter % 1000000
  local body = string.format(
    '{"sender_number": "+44 7911 %06d", "sms_message": "ACME %016x +447911%06d", ' ..
    '"received_timestamp": "%s"}',
    number, counter, number, os.date("!%Y-%m-%dT%H:%M:%SZ"))
  return wrk.format(nil, "/sms/receive", nil, body)
end
