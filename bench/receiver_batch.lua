-- wrk script for the batch benchmark: POST /sms/receive/batch with 1000 SMS per request (one body
-- built once: the receiver stores every item of every request, there is no key to dedup on).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local items = {}
for i = 1, 1000 do
  items[i] = string.format(
    '{"sender_number": "+1 555 %07d", "sms_message": "ACME %016x +1555%07d", ' ..
    '"received_timestamp": "2024-06-22T15:46:11+02:00"}', i, i, i)
end
wrk.body = "[" .. table.concat(items, ",") .. "]"
wrk.path = "/sms/receive/batch"
