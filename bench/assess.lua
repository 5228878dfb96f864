-- wrk script for the load benchmark: POST a different return to /v1/returns/assess on every request.
-- Bodies come from BODIES_FILE (one JSON per line, with __RID__ where the return id goes); every request
-- gets a new return id (thread number + counter), so none is an idempotent replay.
-- thread_id is a global: setup() sets it in each thread's own Lua state
local bodies = {}
local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("BODIES_FILE")) do
    table.insert(bodies, line)
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
end

function request()
  counter = counter + 1
  -- the threads take turns through the list (thread 1 the 1st, 3rd, ... body of two), so the returns go out
  -- in about their time order and each once, until the list is used up
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
  local body = bodies[((counter - 1) * nthreads + thread_id - 1) % #bodies + 1]
  local rid = string.format("%s-%d-%d", os.getenv("RUN_TAG"), thread_id, counter)
  return wrk.format(nil, "/v1/returns/assess", nil, (body:gsub("__RID__", rid)))
end
