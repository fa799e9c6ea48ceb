-- wrk script for the receiver benchmark: POST /sms/receive with a different sender and message
-- on every request (the same script for every endpoint compared).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0

request = function()
  counter = counter + 1
  local body = string.format(
    '{"sender_number": "+1 555 %07d", "sms_message": "ACME %016x +1555%07d", ' ..
    '"received_timestamp": "2024-06-22T15:46:11+02:00"}',
    counter % 10000000, counter, counter % 10000000)
  return wrk.format(nil, "/sms/receive", nil, body)
end
