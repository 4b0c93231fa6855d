-- Scenario "read": GET /api/v1/patients/{id} with a bearer token.
-- Arguments: token1 patient1 token2 patient2 ... (pairs the signed-in doctor may see).

overflow = 0
local requests_ = {}
local position = 0

function init(args)
  for i = 1, #args, 2 do
    local headers = { ["Authorization"] = "Bearer " .. args[i] }
    table.insert(requests_, wrk.format("GET", "/api/v1/patients/" .. args[i + 1], headers))
  end
  position = thread_index % #requests_
end

function request()
  position = position % #requests_ + 1
  return requests_[position]
end
