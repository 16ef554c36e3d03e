-- wrk script: GetItem or PutItem (OP=get|put) of uniformly chosen records
-- user0..user(RECORDS-1) of table "bench", as `dynaraft bench` loads them.
-- Every request carries a well-formed SigV4 Authorization header (access
-- key id `bench`, as `dynaraft bench`: the embedded server keeps tables per
-- key, as DynamoDB Local does) whose
-- signature is not checked (dynalite checks none; dynaraft embedded checks
-- none without --auth-file). A non-200 answer is counted and printed at
-- the end; wrk's requests/s include them, so compare.sh refuses a run
-- that had any.
local op = os.getenv("OP") or "get"
local records = tonumber(os.getenv("RECORDS") or "100000")
local payload = string.rep("x", tonumber(os.getenv("ITEM_BYTES") or "980"))
local target = op == "put" and "PutItem" or "GetItem"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "DynamoDB_20120810." .. target
wrk.headers["X-Amz-Date"] = os.date("!%Y%m%dT%H%M%SZ")
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=bench/"
  .. os.date("!%Y%m%d") .. "/us-east-1/dynamodb/aws4_request, "
  .. "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
  .. string.rep("0", 64)

-- Globals, so that done() can read each thread's count.
errors = 0
first_error = nil
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local pk = '{"pk":{"S":"user' .. math.random(0, records - 1) .. '"}'
  local body
  if op == "put" then
    body = '{"TableName":"bench","Item":' .. pk .. ',"v":{"S":"' .. payload .. '"}}}'
  else
    body = '{"TableName":"bench","Key":' .. pk .. '}}'
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    first_error = first_error or (status .. " " .. body)
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("errors")
    local e = t:get("first_error")
    if e then
      io.write("first non-200 answer: " .. e .. "\n")
    end
  end
  io.write(string.format("non-200 answers: %d\n", total))
  io.write(string.format("p50 %.2f ms, p99 %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
