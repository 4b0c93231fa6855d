-- Scenario "write": POST /api/v1/patients, each time with a national ID never used before.
-- Arguments: base stride token1 token2 ...
-- Thread k uses the numbers base + k*stride + 1 .. base + (k+1)*stride. Number n becomes birth
-- date 1880-01-01 + floor(n / 1000) days and sequence n mod 1000 (no demo patient is born before
-- 1948, so none collides), with the GB 11643 MOD 11-2 check character.

local REGION = "411625"
local WEIGHTS = { 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2 }
local CHECK = "10X98765432"
local DIGITS = { "零", "一", "二", "三", "四", "五", "六", "七", "八", "九" }
-- Days from 1970-01-01 back to 1880-01-01.
local EPOCH_1880 = -32872

overflow = 0
local tokens = {}
local first, last, counter = 0, 0, 0

-- Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then
    y = y + 1
  end
  return y, m, d
end

function national_id(n)
  local y, m, d = civil(EPOCH_1880 + math.floor(n / 1000))
  local body = string.format("%s%04d%02d%02d%03d", REGION, y, m, d, n % 1000)
  local total = 0
  for i = 1, 17 do
    total = total + tonumber(string.sub(body, i, i)) * WEIGHTS[i]
  end
  local k = total % 11 + 1
  return body .. string.sub(CHECK, k, k)
end

local function chinese_number(n)
  local parts = {}
  for c in string.gmatch(tostring(n), "%d") do
    table.insert(parts, DIGITS[tonumber(c) + 1])
  end
  return table.concat(parts)
end

function init(args)
  local base, stride = tonumber(args[1]), tonumber(args[2])
  for i = 3, #args do
    table.insert(tokens, args[i])
  end
  first = base + thread_index * stride
  last = first + stride
  counter = first
end

function request()
  counter = counter + 1
  if counter > last then
    overflow = overflow + 1  -- never expected: the stride leaves room for 5,000 req/s a thread
    counter = first + 1
  end
  local body = string.format('{"national_id": "%s", "name": "测试%s"}',
    national_id(counter), chinese_number(counter))
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/api/v1/patients", headers, body)
end
