-- The shared budget of one model in Redis: BudgetState::reserve / BudgetState::apply of
-- mistral-core's limiter/budget.rs and limiter/budget/*.rs, line for line. Keep the two
-- in step; the blocking client's store tests (blocking/tests/store_redis.rs) run both on
-- the same vectors and compare every field.
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
-- reserve: ARGV[7] tokens, ARGV[8] retry (0/1), ARGV[9] within_us, ARGV[10] confirm
--          (0/1), ARGV[11] the confirmed epoch, ARGV[12] the lane, ARGV[13] the lane's
--          reserved share (ppm), ARGV[14] the confirmed booking's lane, ARGV[15] its
--          shift, ARGV[16] its slot
-- report:  ARGV[7] req_limit, ARGV[8] req_window_secs, ARGV[9] tok_limit,
--          ARGV[10] tok_window_secs, ARGV[11] has_used (0/1), ARGV[12] estimated,
--          ARGV[13] used, ARGV[14] signal, ARGV[15] wait_us, ARGV[16] window_us,
--          ARGV[17] has_remaining (0/1), ARGV[18] req_remaining, ARGV[19] has_ticket
--          (0/1), ARGV[20] ticket epoch, ARGV[21] ticket seq, ARGV[22] has token
--          remaining (0/1), ARGV[23] tok_remaining
-- Returns {kind, value, the 47 fields, the ticket's lane, shift and slot}: kind 0 go
-- (value: wait us; the ticket is the state's epoch and seq and the last three), 1 recheck (value: us), 2 closed (value: block), 3 reported,
-- 4 late (value: us).

local MAX = 9007199254740991
local MICROS = 1000000
local FULL_SHARE = 1000000
local MARGIN_PPM = 15000
local BLOCK_MICROS = 600 * MICROS
local PROBE_RECHECK_MICROS = 20000
local PROBE_TIMEOUT_MICROS = 2 * MICROS
local LEARN_START_MILLI = 2000
local LEARN_MIN_MILLI = 10
local LEARN_MAX_MILLI = 100000000
local SLOW_START_STEP_MICROS = 100000
local PROBE_PAUSE_CAP_MICROS = 2 * MICROS
local CLOCK_STEP_MICROS = MICROS
local LEARN_HORIZON_PERIODS = 4

-- Source: 0 unknown, 1 configured, 2 headers, 3 learned. Block: 0 none, 1 no
-- allowance, 2 monthly quota.
local UNKNOWN, CONFIGURED, HEADERS, LEARNED = 0, 1, 2, 3

local FIELDS = {
  'seen_us', 'req_tat_us', 'tok_tat_us', 'retry_tat_us', 'req_base_ns', 'tok_base_ns',
  'source', 'share_ppm', 'pause_until_us', 'block', 'block_until_us', 'event_us',
  'grown_us', 'probe_until_us', 'meter_start_us', 'meter_count', 'meter_rate_milli',
  'epoch', 'seq', 'credit', 'credit_seq', 'recovering', 'streak', 'rate_milli',
  'max_milli', 'slow_start', 'binding', 'anchor_us', 'spent_us', 'cycle_start_us',
  'cycle_count', 'windowed', 'pending', 'fresh_us', 'lane0_req_us', 'lane1_req_us',
  'lane0_tok_us', 'lane1_tok_us', 'shift1_us', 'shift2_us', 'reserve1_us', 'reserve2_us',
  'ins1_at_us', 'ins1_len_us', 'ins2_at_us', 'ins2_len_us', 'tok_credit',
}
-- The fields before the priority lanes (a hash written before them lacks the rest,
-- which start at 0).
local LANELESS_FIELDS = 34
local LAST_LANE = 2

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
  if b == 0 then return 0 end
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
    if v == nil and i > LANELESS_FIELDS and values[1] then v = 0 end
    if v == nil or v ~= v or v < 0 or v > MAX or v ~= math.floor(v) then
      return seeded()
    end
    s[f] = v
  end
  if s.source > 3 or s.block > 2 or s.recovering > 1 or s.slow_start > 1
    or s.binding > 1 or s.windowed > 1 then
    return seeded()
  end
  return s
end

local s = load()

-- BudgetState::advance
local function advance()
  if now < s.seen_us and s.seen_us - now < CLOCK_STEP_MICROS then
    now = s.seen_us
    return
  end
  if now < s.seen_us then
    local back = s.seen_us - now
    for _, f in ipairs({ 'req_tat_us', 'tok_tat_us', 'retry_tat_us', 'pause_until_us',
      'block_until_us', 'event_us', 'grown_us', 'probe_until_us', 'meter_start_us',
      'anchor_us', 'spent_us', 'cycle_start_us', 'fresh_us', 'lane0_req_us', 'lane1_req_us',
      'lane0_tok_us', 'lane1_tok_us', 'reserve1_us', 'reserve2_us', 'ins1_at_us',
      'ins2_at_us' }) do
      s[f] = sub(s[f], back)
    end
  end
  if now >= add(s.seen_us, 60 * MICROS) then s.pending = 0 end
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

-- BudgetState::req_period_us
local function req_period_us()
  return idiv(period_ns(s.req_base_ns), 1000)
end

-- BudgetState::lane_req
local function lane_req(lane)
  if lane == 0 then return min(min(s.lane0_req_us, s.lane1_req_us), s.req_tat_us) end
  if lane == 1 then return min(s.lane1_req_us, s.req_tat_us) end
  return s.req_tat_us
end

-- BudgetState::lane_tok
local function lane_tok(lane)
  if lane == 0 then return min(min(s.lane0_tok_us, s.lane1_tok_us), s.tok_tat_us) end
  if lane == 1 then return min(s.lane1_tok_us, s.tok_tat_us) end
  return s.tok_tat_us
end

-- BudgetState::shift_of
local function shift_of(lane)
  if lane == 0 then return 0 end
  if lane == 1 then return s.shift1_us end
  return s.shift2_us
end

-- BudgetState::last_insert
local function last_insert(lane)
  if lane == 0 then return 0, 0 end
  if lane == 1 then return s.ins1_at_us, s.ins1_len_us end
  return s.ins2_at_us, s.ins2_len_us
end

-- BudgetState::starving
local function starving(lane, tokens)
  local period = req_period_us()
  local cost = idiv(mul(tokens, period_ns(s.tok_base_ns)), 1000)
  local unit = max(max(period, cost), 1)
  local above = max(lane_req(lane - 1), lane_tok(lane - 1))
  return above > add(now, mul(2, unit))
end

-- BudgetState::reserve_room
local function reserve_room(lane, ppm)
  local cell = s.reserve2_us
  if lane == 1 then cell = s.reserve1_us end
  return ppm > 0 and cell <= now
end

-- BudgetState::take_reserve
local function take_reserve(lane, unit_us, ppm)
  local nxt = add(now, idiv(mul(unit_us, FULL_SHARE), max(ppm, 1)))
  if lane == 1 then s.reserve1_us = nxt else s.reserve2_us = nxt end
end

-- BudgetState::place
local function place(lane, start, len, tokens)
  local fin = add(start, len)
  local moved = { false, false, false }
  for j = lane, LAST_LANE do
    local booked
    if tokens then booked = lane_tok(j) else booked = lane_req(j) end
    local new
    if j == lane then
      new = fin
    elseif booked > start then
      moved[j + 1] = true
      new = add(booked, len)
    else
      new = max(fin, booked)
    end
    if tokens then
      if j == 0 then s.lane0_tok_us = new elseif j == 1 then s.lane1_tok_us = new
      else s.tok_tat_us = new end
    else
      if j == 0 then s.lane0_req_us = new elseif j == 1 then s.lane1_req_us = new
      else s.req_tat_us = new end
    end
  end
  return moved
end

-- BudgetState::order_lanes
local function order_lanes()
  s.lane1_req_us = min(s.lane1_req_us, s.req_tat_us)
  s.lane0_req_us = min(s.lane0_req_us, s.lane1_req_us)
  s.lane1_tok_us = min(s.lane1_tok_us, s.tok_tat_us)
  s.lane0_tok_us = min(s.lane0_tok_us, s.lane1_tok_us)
end

-- The booked ticket's lane and shift (appended to the reply).
local ticket_lane, ticket_shift, ticket_slot = 0, 0, 0

-- BudgetState::book
local function book(wait, lane)
  s.seq = add(s.seq, 1)
  s.pending = add(s.pending, 1)
  ticket_lane = lane
  ticket_shift = shift_of(lane)
  ticket_slot = add(s.seen_us, wait)
  return { 0, wait }
end

-- BudgetState::reserve_inner
local function reserve(tokens, retry, within, confirm, confirm_epoch, ask_lane, reserve_ppm,
    confirm_lane, confirm_shift, confirm_slot)
  if tokens < 1 then tokens = 1 end
  local lane = min(ask_lane, LAST_LANE)
  local boost_confirmed = false
  advance()
  if s.block ~= 0 then
    if now < s.block_until_us then return { 2, s.block } end
    s.block_until_us = add(now, BLOCK_MICROS)
  end
  if confirm and confirm_epoch ~= s.epoch then s.pending = sub(s.pending, 1) end
  if confirm and confirm_epoch == s.epoch then
    local booked = min(confirm_lane, LAST_LANE)
    local shift = shift_of(booked)
    local extra = sub(shift, confirm_shift)
    local ins_at, ins_len = last_insert(booked)
    if ins_len > 0 and extra >= ins_len and add(confirm_slot, extra - ins_len) < ins_at then
      extra = extra - ins_len
    end
    ticket_lane = booked
    ticket_shift = shift
    ticket_slot = now
    if extra == 0 then return { 0, 0 } end
    local boost = booked > 0 and starving(booked, tokens) and reserve_room(booked, reserve_ppm)
    if not boost then
      if extra > within then
        s.pending = sub(s.pending, 1)
        return { 4, extra }
      end
      ticket_slot = add(now, extra)
      return { 0, extra }
    end
    s.pending = sub(s.pending, 1)
    lane = booked
    boost_confirmed = true
  end
  local req_ns = period_ns(s.req_base_ns)
  local tok_ns = period_ns(s.tok_base_ns)
  if s.source == UNKNOWN or s.recovering == 1 then
    if now < s.pause_until_us then
      local wait = s.pause_until_us - now
      if wait > within then return { 4, wait } end
      return { 1, wait }
    end
    if now < s.probe_until_us then return { 1, PROBE_RECHECK_MICROS } end
    s.probe_until_us = add(now, PROBE_TIMEOUT_MICROS)
    if req_ns > 0 then
      local fin = add(max(s.req_tat_us, now), idiv(req_ns, 1000))
      s.req_tat_us = fin
      s.lane1_req_us = max(s.lane1_req_us, fin)
      s.lane0_req_us = max(s.lane0_req_us, fin)
    end
    if tok_ns > 0 then
      local cost = idiv(mul(tokens, tok_ns), 1000)
      local fin = add(max(s.tok_tat_us, now), cost)
      s.tok_tat_us = fin
      s.lane1_tok_us = max(s.lane1_tok_us, fin)
      s.lane0_tok_us = max(s.lane0_tok_us, fin)
    end
    return book(0, lane)
  end
  local use_credit = s.credit > 0 and req_ns > 0
  local use_tok_credit = tok_ns > 0 and s.tok_credit >= tokens
  local period = idiv(req_ns, 1000)
  local cost = 0
  if tok_ns > 0 then cost = idiv(mul(tokens, tok_ns), 1000) end
  local retry_period_us = 50000
  local retry_held = retry and req_ns == 0
  local function start_in(l)
    local start = now
    if req_ns > 0 and not use_credit then start = max(start, lane_req(l)) end
    if tok_ns > 0 and not use_tok_credit then start = max(start, lane_tok(l)) end
    if retry_held then
      start = max(start, sub(s.retry_tat_us, mul(10, retry_period_us)))
    end
    local floor = max(start, add(now, 1))
    local queued = l < LAST_LANE and req_ns > 0 and not use_credit
    if queued and s.req_tat_us > floor and s.req_tat_us > s.pause_until_us then
      local k = idiv(s.req_tat_us - floor, max(period, 1))
      return sub(s.req_tat_us, mul(k, period))
    end
    start = max(start, s.pause_until_us)
    floor = max(start, add(now, 1))
    if queued and s.req_tat_us > floor then
      local k = idiv(s.req_tat_us - floor, max(period, 1))
      start = sub(s.req_tat_us, mul(k, period))
    end
    return start
  end
  local asked_lane = lane
  if s.source == LEARNED then lane = LAST_LANE end
  local start = start_in(lane)
  local boost_new = lane > 0 and lane == asked_lane and (not confirm) and starving(lane, tokens)
    and reserve_room(lane, reserve_ppm)
  if boost_confirmed or boost_new then
    take_reserve(lane, max(period, cost), reserve_ppm)
    lane = 0
    start = start_in(0)
  end
  local wait = start - now
  if wait > within then return { 4, wait } end
  if s.source == LEARNED and req_ns > 0 then
    local periods = sub(LEARN_HORIZON_PERIODS + 1, asked_lane)
    local horizon = max(min(max(mul(period, periods), idiv(MICROS, 4)), MICROS), period)
    if wait > horizon then return { 1, wait - horizon } end
  end
  if retry_held then
    s.retry_tat_us = add(max(s.retry_tat_us, start), retry_period_us)
  end
  local moved = { 0, 0, 0 }
  if req_ns > 0 then
    if s.req_tat_us > now then s.binding = 1 end
    if use_credit then
      s.credit = s.credit - 1
      local after = add(start, period)
      s.req_tat_us = max(s.req_tat_us, after)
      s.lane1_req_us = max(s.lane1_req_us, after)
      s.lane0_req_us = max(s.lane0_req_us, after)
    else
      local m = place(lane, start, period, false)
      for i = 1, 3 do
        if m[i] then moved[i] = period end
      end
    end
  end
  if use_tok_credit then
    s.tok_credit = s.tok_credit - tokens
    local after = add(start, cost)
    s.tok_tat_us = max(s.tok_tat_us, after)
    s.lane1_tok_us = max(s.lane1_tok_us, after)
    s.lane0_tok_us = max(s.lane0_tok_us, after)
  elseif tok_ns > 0 then
    local tok_start = max(lane_tok(lane), start)
    local m = place(lane, tok_start, cost, true)
    for i = 1, 3 do
      if m[i] then moved[i] = max(moved[i], cost) end
    end
  end
  s.shift1_us = add(s.shift1_us, moved[2])
  s.shift2_us = add(s.shift2_us, moved[3])
  if moved[2] > 0 then
    s.ins1_at_us = start
    s.ins1_len_us = moved[2]
  end
  if moved[3] > 0 then
    s.ins2_at_us = start
    s.ins2_len_us = moved[3]
  end
  return book(wait, lane)
end

-- BudgetState::set_rate
local function set_rate(rate_milli)
  local rate = min(max(rate_milli, LEARN_MIN_MILLI), LEARN_MAX_MILLI)
  s.rate_milli = rate
  s.req_base_ns = idiv(1000000000000, rate)
end

-- BudgetState::become_learned
local function become_learned()
  s.source = LEARNED
  s.share_ppm = FULL_SHARE
  s.slow_start = 1
  s.max_milli = 0
  s.grown_us = now
  s.cycle_start_us = now
  s.cycle_count = 0
  set_rate(LEARN_START_MILLI)
  local nxt = add(now, req_period_us())
  s.req_tat_us = max(s.req_tat_us, nxt)
  s.lane1_req_us = max(s.lane1_req_us, nxt)
  s.lane0_req_us = max(s.lane0_req_us, nxt)
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
    if s.source == LEARNED and req_limit == 0 then s.req_base_ns = 0 end
    s.source = HEADERS
    s.share_ppm = FULL_SHARE
    s.grown_us = now
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

-- BudgetState::delivered_milli
local function delivered_milli()
  local span = sub(now, s.meter_start_us)
  local current = 0
  if span >= idiv(MICROS, 4) then current = idiv(mul(s.meter_count, 1000 * MICROS), span) end
  local cycle_span = sub(now, s.cycle_start_us)
  local cycle = 0
  if cycle_span >= MICROS then
    cycle = idiv(mul(s.cycle_count, 1000 * MICROS), cycle_span)
  end
  return max(max(current, s.meter_rate_milli), cycle)
end

-- BudgetState::grow
local function grow()
  local elapsed = sub(now, max(s.grown_us, s.event_us))
  if s.source == LEARNED then
    local delivered = delivered_milli()
    local used
    if s.slow_start == 1 then
      used = mul(delivered, 2) >= s.rate_milli
    else
      used = mul(delivered, 5) >= mul(s.rate_milli, 4)
    end
    if s.binding == 0 or not used then
      if elapsed >= MICROS then s.grown_us = now end
      return
    end
    if s.slow_start == 1 then
      if elapsed >= SLOW_START_STEP_MICROS then
        set_rate(mul(s.rate_milli, 2))
        s.grown_us = now
        s.binding = 0
        s.req_tat_us = min(s.req_tat_us, add(now, req_period_us()))
      end
      return
    end
    if elapsed >= idiv(MICROS, 10) then
      local dt = min(elapsed, MICROS)
      local rate = s.rate_milli
      local probe = max(idiv(mul(rate, dt), 50 * MICROS), 1)
      local inc = probe
      if rate < s.max_milli then
        inc = max(idiv(mul(s.max_milli - rate, dt), 2 * MICROS), probe)
      else
        inc = max(idiv(mul(rate - s.max_milli, dt), idiv(MICROS, 2)), probe)
      end
      set_rate(add(rate, inc))
      s.grown_us = now
      s.binding = 0
    end
    return
  end
  if elapsed >= idiv(MICROS, 10) and s.share_ppm < FULL_SHARE then
    s.share_ppm = min(add(s.share_ppm, idiv(elapsed, 100)), FULL_SHARE)
    s.grown_us = now
  end
end

-- BudgetState::hold_one_unit
local function hold_one_unit()
  local period_us = req_period_us()
  if period_us > 0 then
    s.pause_until_us = max(s.pause_until_us, add(now, period_us))
    s.req_tat_us = max(s.req_tat_us, s.pause_until_us)
  end
end

-- BudgetState::read_token_remaining
local function read_token_remaining(has_remaining, remaining, has_req_remaining, has_ticket,
  ticket_seq, estimated)
  if not has_remaining then return end
  if s.tok_base_ns == 0 then return end
  local seq = s.seq
  if has_ticket then seq = ticket_seq end
  if seq < s.credit_seq then
    if remaining == 0 then s.tok_credit = 0 end
    return
  end
  if not has_req_remaining then s.credit_seq = seq end
  local out = add(max(sub(s.seq, seq), s.pending), 1)
  s.tok_credit = sub(remaining, mul(out, max(estimated, 1)))
end

-- BudgetState::read_remaining
local function read_remaining(req_limit, req_window_secs, has_remaining, remaining, has_ticket,
  ticket_seq)
  if not has_remaining then return end
  local seq = s.seq
  if has_ticket then seq = ticket_seq end
  if seq < s.credit_seq then
    if remaining > 0 or s.credit > 1 then return end
  else
    s.credit_seq = seq
  end
  local window_us = mul(req_window_secs, MICROS)
  if s.spent_us > 0 and remaining > 0 and now < add(s.anchor_us, window_us) then
    s.windowed = 0
  end
  if req_limit > 0 and add(remaining, 1) >= req_limit then
    s.anchor_us = now
    s.fresh_us = now
  elseif s.spent_us > 0 and remaining > 0 then
    s.anchor_us = now
  end
  local credit = sub(remaining, max(sub(s.seq, seq), s.pending))
  if credit >= 2 then credit = credit - 1 end
  s.credit = credit
  if remaining == 0 then
    if s.spent_us == 0 then s.spent_us = now end
    s.credit = 0
    s.credit_seq = max(s.credit_seq, s.seq)
    hold_one_unit()
    if s.windowed == 1 and s.fresh_us > 0 and window_us > 0
      and now < add(s.fresh_us, window_us) then
      local margin = idiv(mul(window_us, MARGIN_PPM), FULL_SHARE)
      local round = min(sub(add(add(s.fresh_us, window_us), margin), now), window_us)
      if add(now, round) > s.pause_until_us then
        s.pause_until_us = add(now, round)
        s.epoch = add(s.epoch, 1)
      end
      s.req_tat_us = max(s.req_tat_us, s.pause_until_us)
      s.recovering = 1
      s.streak = 0
      s.probe_until_us = 0
    end
  else
    s.spent_us = 0
  end
end

-- BudgetState::recovery_pause
local function recovery_pause(wait_us, window_us)
  local period = req_period_us()
  local base = max(period, idiv(MICROS, 10))
  local cap = max(period, PROBE_PAUSE_CAP_MICROS)
  local pause = base
  for _ = 1, min(s.streak, 32) do
    pause = min(mul(pause, 2), cap)
  end
  pause = max(pause, wait_us)
  if s.source == HEADERS and s.anchor_us > 0 and window_us > 0
    and (s.windowed == 1 or (s.spent_us > 0 and now >= add(s.spent_us, period))) then
    local round = min(sub(add(s.anchor_us, window_us), now), window_us)
    pause = max(pause, round)
  end
  return min(pause, BLOCK_MICROS)
end

-- BudgetState::decrease
local function decrease()
  if s.source == LEARNED then
    local rate = s.rate_milli
    s.slow_start = 0
    s.max_milli = rate
    local delivered = idiv(mul(delivered_milli(), 95), 100)
    local new = max(min(delivered, idiv(mul(rate, 9), 10)), idiv(mul(rate, 7), 10))
    set_rate(new)
  elseif s.spent_us == 0 then
    s.share_ppm = max(idiv(mul(s.share_ppm, 9), 10), idiv(FULL_SHARE, 20))
  else
    s.share_ppm = max(idiv(mul(s.share_ppm, 97), 100), idiv(mul(FULL_SHARE, 7), 10))
  end
end

-- BudgetState::refusal
local function refusal(wait_us, window_us, current)
  s.credit = 0
  s.tok_credit = 0
  if not current then return end
  if s.recovering == 1 then
    s.streak = add(s.streak, 1)
    s.probe_until_us = now
  else
    s.epoch = add(s.epoch, 1)
    s.recovering = 1
    s.streak = 0
    s.probe_until_us = now
    s.event_us = now
    decrease()
  end
  if s.source == HEADERS and s.spent_us > 0 and window_us > 0
    and now >= add(s.spent_us, req_period_us()) then
    s.windowed = 1
  end
  local pause = recovery_pause(wait_us, window_us)
  s.pause_until_us = max(s.pause_until_us, add(now, pause))
  s.req_tat_us = s.pause_until_us
end

-- BudgetState::end_recovery
local function end_recovery()
  s.recovering = 0
  s.streak = 0
  s.probe_until_us = 0
  s.req_tat_us = max(s.req_tat_us, now)
  if s.source ~= LEARNED then return end
  local span = sub(now, s.cycle_start_us)
  if sub(now, s.event_us) >= MICROS and span >= MICROS and s.cycle_count > 0 then
    local cycle = idiv(mul(s.cycle_count, 1000 * MICROS), span)
    if cycle < s.rate_milli then
      set_rate(cycle)
      s.max_milli = min(s.max_milli, idiv(mul(s.rate_milli, 10), 9))
    end
  end
  s.cycle_start_us = now
  s.cycle_count = 0
end

-- BudgetState::close
local function close(block)
  s.block = block
  s.credit = 0
  s.tok_credit = 0
  s.block_until_us = add(now, BLOCK_MICROS)
end

-- BudgetState::apply
local function report()
  advance()
  learn_limits(arg(7), arg(8), arg(9), arg(10))
  if arg(11) == 1 then correct_tokens(arg(12), arg(13)) end
  local signal = arg(14)
  local has_ticket = arg(19) == 1
  if has_ticket and signal ~= 6 then s.pending = sub(s.pending, 1) end
  local current = (not has_ticket) or arg(20) >= s.epoch
  if signal == 1 then
    if s.source == UNKNOWN then become_learned() end
    if s.block ~= 0 then s.block = 0 end
    meter()
    if s.recovering == 1 then end_recovery() end
    s.cycle_count = add(s.cycle_count, 1)
    grow()
    if s.source == HEADERS then
      read_token_remaining(arg(22) == 1, arg(23), arg(17) == 1, has_ticket, arg(21), arg(12))
      read_remaining(arg(7), arg(8), arg(17) == 1, arg(18), has_ticket, arg(21))
    end
  elseif signal == 2 then
    refusal(arg(15), arg(16), current)
  elseif signal == 3 then
    if s.source == UNKNOWN then become_learned() end
    refusal(arg(15), 0, current)
  elseif signal == 4 then
    close(1)
  elseif signal == 5 then
    close(2)
  elseif signal == 0 then
    if s.source == UNKNOWN or s.recovering == 1 then s.probe_until_us = now end
  end
  return { 3, 0 }
end

local out
if ARGV[1] == 'reserve' then
  out = reserve(arg(7), arg(8) == 1, arg(9), arg(10) == 1, arg(11), arg(12), arg(13), arg(14),
    arg(15), arg(16))
elseif ARGV[1] == 'report' then
  out = report()
else
  return redis.error_reply('mistral limiter: unknown op')
end

-- Store every field as a plain decimal integer (tostring would write 1.7e+15).
order_lanes()
local pairs_out = {}
for _, f in ipairs(FIELDS) do
  pairs_out[#pairs_out + 1] = f
  pairs_out[#pairs_out + 1] = string.format('%.0f', s[f])
  out[#out + 1] = s[f]
end
out[#out + 1] = ticket_lane
out[#out + 1] = ticket_shift
out[#out + 1] = ticket_slot
redis.call('HSET', KEYS[1], unpack(pairs_out))
local ttl = arg(3)
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return out
