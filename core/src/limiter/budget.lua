-- The shared budget of one model in Redis: BudgetState::reserve / BudgetState::apply of
-- mistral-core's budget.rs, line for line. Keep the two in step; the test
-- blocking/tests/stores_redis.rs runs both on the same vectors and compares every field.
--
-- Lua numbers are doubles. Every value stays an integer at or below MAX (2^53 - 1), and
-- only these operations are used, each exact: add/mul saturating at MAX, sub floored at
-- 0, comparisons, and idiv (a floor division through fmod, which is exact).
--
-- KEYS[1]  the budget's hash (one per base URL/key hash and model)
-- ARGV[1]  "reserve" | "report"
-- ARGV[2]  now in microseconds, or "" to read Redis TIME (one clock for the fleet)
-- ARGV[3]  expiry of the hash in seconds (0: none)
-- ARGV[4..6] seed of a new budget: configured (0/1), req_base_ns, tok_base_ns
-- reserve: ARGV[7] tokens, ARGV[8] retry (0/1)
-- report:  ARGV[7] req_limit, ARGV[8] req_window_secs, ARGV[9] tok_limit,
--          ARGV[10] tok_window_secs, ARGV[11] has_used (0/1), ARGV[12] estimated,
--          ARGV[13] used, ARGV[14] signal, ARGV[15] wait_us, ARGV[16] window_us,
--          ARGV[17] req_spent (0/1)
-- Returns {kind, value, the 17 fields}: kind 0 go (value: wait us), 1 recheck (value:
-- us), 2 closed (value: block), 3 reported.

local MAX = 9007199254740991
local MICROS = 1000000
local FULL_SHARE = 1000000
local MARGIN_PPM = 15000
local BLOCK_MICROS = 600 * MICROS
local PROBE_RECHECK_MICROS = 20000
local PROBE_TIMEOUT_MICROS = 2 * MICROS

-- Source: 0 unknown, 1 configured, 2 headers, 3 learned. Block: 0 none, 1 no
-- allowance, 2 monthly quota.
local UNKNOWN, CONFIGURED, HEADERS, LEARNED = 0, 1, 2, 3

local FIELDS = {
  'seen_us', 'req_tat_us', 'tok_tat_us', 'retry_tat_us', 'req_base_ns', 'tok_base_ns',
  'source', 'share_ppm', 'pause_until_us', 'block', 'block_until_us', 'calm_after_us',
  'grown_us', 'probe_until_us', 'meter_start_us', 'meter_count', 'meter_rate_milli',
}

local function add(a, b)
  local s = a + b
  if s > MAX then return MAX end
  return s
end

local function mul(a, b)
  local p = a * b
  if p > MAX then return MAX end
  return p
end

local function sub(a, b)
  if a > b then return a - b end
  return 0
end

local function idiv(a, b)
  return (a - math.fmod(a, b)) / b
end

local function max(a, b)
  if a > b then return a end
  return b
end

local function min(a, b)
  if a < b then return a end
  return b
end

-- An argument: a non-negative integer, clamped to MAX (the caller clamps already).
local function arg(i)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= v or v < 0 then return 0 end
  return min(math.floor(v), MAX)
end

local now
if ARGV[2] ~= nil and ARGV[2] ~= '' then
  now = arg(2)
else
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = min(tonumber(t[1]) * MICROS + tonumber(t[2]), MAX)
end

-- BudgetState::seeded
local function seeded()
  local s = {}
  for _, f in ipairs(FIELDS) do s[f] = 0 end
  s.seen_us = now
  s.share_ppm = FULL_SHARE
  s.grown_us = now
  s.meter_start_us = now
  if arg(4) == 1 then
    s.source = CONFIGURED
    s.req_base_ns = arg(5)
    s.tok_base_ns = arg(6)
  end
  return s
end

-- BudgetState::from_fields: a missing or out-of-range field starts the budget afresh.
local function load()
  local values = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  local s = {}
  for i, f in ipairs(FIELDS) do
    local v = tonumber(values[i])
    if v == nil or v ~= v or v < 0 or v > MAX or v ~= math.floor(v) then
      return seeded()
    end
    s[f] = v
  end
  if s.source > 3 or s.block > 2 then return seeded() end
  return s
end

local s = load()

-- BudgetState::advance
local function advance()
  if now < s.seen_us then
    local back = s.seen_us - now
    for _, f in ipairs({ 'req_tat_us', 'tok_tat_us', 'retry_tat_us', 'pause_until_us',
      'block_until_us', 'calm_after_us', 'grown_us', 'probe_until_us',
      'meter_start_us' }) do
      s[f] = sub(s[f], back)
    end
  end
  s.seen_us = now
end

-- BudgetState::period_ns
local function period_ns(base_ns)
  if base_ns == 0 then return 0 end
  local eff = max(idiv(mul(s.share_ppm, FULL_SHARE - MARGIN_PPM), FULL_SHARE), 1)
  local rest = math.fmod(base_ns, eff)
  local whole = (base_ns - rest) / eff
  return add(mul(whole, FULL_SHARE), idiv(mul(rest, FULL_SHARE), eff))
end

-- BudgetState::reserve
local function reserve(tokens, retry)
  if tokens < 1 then tokens = 1 end
  advance()
  if s.block ~= 0 then
    if now < s.block_until_us then return { 2, s.block } end
    s.block_until_us = add(now, BLOCK_MICROS)
  end
  if s.source == UNKNOWN then
    if now < s.probe_until_us then return { 1, PROBE_RECHECK_MICROS } end
    s.probe_until_us = add(now, PROBE_TIMEOUT_MICROS)
  end
  local req_ns = period_ns(s.req_base_ns)
  local tok_ns = period_ns(s.tok_base_ns)
  local start = max(now, s.pause_until_us)
  if req_ns > 0 then start = max(start, s.req_tat_us) end
  if tok_ns > 0 then start = max(start, s.tok_tat_us) end
  local retry_period_us = 50000
  if retry and req_ns == 0 then
    start = max(start, sub(s.retry_tat_us, mul(10, retry_period_us)))
    s.retry_tat_us = add(max(s.retry_tat_us, start), retry_period_us)
  end
  if req_ns > 0 then
    s.req_tat_us = add(start, idiv(req_ns, 1000))
  end
  if tok_ns > 0 then
    local cost = idiv(mul(tokens, tok_ns), 1000)
    s.tok_tat_us = add(max(s.tok_tat_us, start), cost)
  end
  return { 0, start - now }
end

-- BudgetState::learn_limits
local function learn_limits(req_limit, req_window_secs, tok_limit, tok_window_secs)
  if s.source == CONFIGURED then return end
  local learned = false
  if req_limit > 0 then
    s.req_base_ns = idiv(mul(req_window_secs, 1000000000), req_limit)
    learned = true
  end
  if tok_limit > 0 then
    s.tok_base_ns = idiv(mul(tok_window_secs, 1000000000), tok_limit)
    learned = true
  end
  if learned and s.source ~= HEADERS then
    s.source = HEADERS
    s.share_ppm = FULL_SHARE
  end
end

-- BudgetState::correct_tokens
local function correct_tokens(estimated, used)
  local tok_ns = period_ns(s.tok_base_ns)
  if tok_ns == 0 then return end
  if used >= estimated then
    s.tok_tat_us = add(s.tok_tat_us, idiv(mul(used - estimated, tok_ns), 1000))
  else
    s.tok_tat_us = sub(s.tok_tat_us, idiv(mul(estimated - used, tok_ns), 1000))
  end
end

-- BudgetState::meter
local function meter()
  s.meter_count = add(s.meter_count, 1)
  local span = sub(now, s.meter_start_us)
  if span >= MICROS then
    s.meter_rate_milli = idiv(mul(s.meter_count, 1000 * MICROS), span)
    s.meter_start_us = now
    s.meter_count = 0
  end
end

-- BudgetState::raise_to_proven
local function raise_to_proven()
  if s.source ~= LEARNED or s.req_base_ns == 0 then return end
  local proven_milli = max(max(mul(s.meter_count, 1000), s.meter_rate_milli), 1)
  local proven = idiv(100000000000000, mul(proven_milli, 95))
  if proven < s.req_base_ns then s.req_base_ns = proven end
end

-- BudgetState::grow
local function grow()
  local cap = FULL_SHARE
  if s.source == LEARNED then cap = idiv(FULL_SHARE * 3, 2) end
  local elapsed = sub(now, max(s.grown_us, s.calm_after_us))
  if elapsed >= idiv(MICROS, 10) and s.share_ppm < cap then
    s.share_ppm = min(add(s.share_ppm, idiv(elapsed, 100)), cap)
    s.grown_us = now
  end
end

-- BudgetState::congestion
local function congestion(wait_us, window_us)
  if now < s.calm_after_us then return end
  s.pause_until_us = max(s.pause_until_us, add(now, wait_us))
  if s.source == LEARNED and s.req_base_ns == 0 then
    local rate_milli = max(max(s.meter_rate_milli, mul(s.meter_count, 1000)), 1)
    s.req_base_ns = idiv(100000000000000, mul(rate_milli, 95))
    s.share_ppm = FULL_SHARE
  else
    s.share_ppm = max(idiv(mul(s.share_ppm, 9), 10), idiv(FULL_SHARE, 20))
  end
  local horizon = max(max(s.req_tat_us, s.tok_tat_us), s.pause_until_us)
  local calm = max(max(MICROS, window_us), mul(wait_us, 2))
  s.calm_after_us = max(horizon, add(now, calm))
  s.req_tat_us = max(s.req_tat_us, s.pause_until_us)
end

-- BudgetState::hold_one_unit
local function hold_one_unit()
  local period_us = idiv(period_ns(s.req_base_ns), 1000)
  if period_us > 0 then
    s.pause_until_us = max(s.pause_until_us, add(now, period_us))
    s.req_tat_us = max(s.req_tat_us, s.pause_until_us)
  end
end

-- BudgetState::close
local function close(block)
  s.block = block
  s.block_until_us = add(now, BLOCK_MICROS)
end

-- BudgetState::apply
local function report()
  advance()
  learn_limits(arg(7), arg(8), arg(9), arg(10))
  if arg(11) == 1 then correct_tokens(arg(12), arg(13)) end
  local signal = arg(14)
  -- Any answer brings the probe back: the next caller may probe at once.
  if s.source == UNKNOWN then s.probe_until_us = s.seen_us end
  if signal == 1 then
    if s.source == UNKNOWN then s.source = LEARNED end
    if s.block ~= 0 then s.block = 0 end
    meter()
    raise_to_proven()
    grow()
    if arg(17) == 1 then hold_one_unit() end
  elseif signal == 2 then
    congestion(arg(15), arg(16))
  elseif signal == 3 then
    if s.source == UNKNOWN then s.source = LEARNED end
    congestion(arg(15), 0)
  elseif signal == 4 then
    close(1)
  elseif signal == 5 then
    close(2)
  end
  return { 3, 0 }
end

local out
if ARGV[1] == 'reserve' then
  out = reserve(arg(7), arg(8) == 1)
elseif ARGV[1] == 'report' then
  out = report()
else
  return redis.error_reply('mistral limiter: unknown op')
end

-- Store every field as a plain decimal integer (tostring would write 1.7e+15).
local pairs_out = {}
for _, f in ipairs(FIELDS) do
  pairs_out[#pairs_out + 1] = f
  pairs_out[#pairs_out + 1] = string.format('%.0f', s[f])
  out[#out + 1] = s[f]
end
redis.call('HSET', KEYS[1], unpack(pairs_out))
local ttl = arg(3)
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return out
