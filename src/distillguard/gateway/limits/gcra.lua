--[[ GCRA admission and settlement for RedisLimiter: one atomic call each.

Transcribes gcra.py operation for operation (the arithmetic is explained there). Lua 5.1
numbers are IEEE doubles like Python floats, so both backends decide bit-identically.

A bucket key is a hash {s = level, t = time of the update in µs, l = limit}, its numbers
written with %.17g so they round-trip exactly; it expires when the bucket would be full
again (plus `slack`), since an empty bucket and a missing one are the same state. A slot
key is a sorted set: member = lease id, score = the lease's expiry in µs.

KEYS: the n_charges bucket keys, then the n_slots slot keys.
ARGV: mode ('admit' | 'settle'), now_us ('' = Redis TIME), n_charges, n_slots,
      lease ('' = none), lease_ttl_us, slack_ms, then limit, period_us, cost for each
      charge, then limit for each slot.
admit returns {refused, level_1, ..., level_n}: refused is the 1-based position of the
first refusal among charges then slots, 0 when admitted (and everything consumed); each
level is the bucket's before the request. settle returns 0.
]]
local SLACK = 1 / 1099511627776 -- 2^-40, as in gcra.py

local mode = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n_charges, n_slots = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease, lease_ttl, slack = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])

local function num(x)
  return string.format('%.17g', x)
end

local function charge(i)
  local a = 8 + 3 * (i - 1)
  return tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
end

local function level_at(key, limit)
  local v = redis.call('HMGET', key, 's', 't', 'l')
  if not v[1] then
    return 0
  end
  local level, at, old_limit = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if old_limit ~= limit then
    level = level * limit / old_limit
  end
  return math.max(level - (now - at) * limit, 0)
end

local function store(key, level, limit)
  if level <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 's', num(level), 't', num(now), 'l', num(limit))
  local ms = math.min(math.ceil(level / limit / 1000), 2 ^ 50) + slack
  redis.call('PEXPIRE', key, string.format('%d', ms))
end

if mode == 'admit' then
  local out, levels, refused = { 0 }, {}, 0
  for i = 1, n_charges do
    local limit, period, cost = charge(i)
    local level = level_at(KEYS[i], limit)
    levels[i] = level
    out[i + 1] = num(level)
    if refused == 0 and cost ~= 0 then
      local cap = limit * period
      if cost > limit or level + cost * period > cap + cap * SLACK then
        refused = i
      end
    end
  end
  if refused == 0 then
    for j = 1, n_slots do
      local key, limit = KEYS[n_charges + j], tonumber(ARGV[7 + 3 * n_charges + j])
      redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
      if redis.call('ZCARD', key) >= limit then
        refused = n_charges + j
        break
      end
    end
  end
  if refused == 0 then
    for i = 1, n_charges do
      local limit, period, cost = charge(i)
      if cost ~= 0 then
        store(KEYS[i], levels[i] + cost * period, limit)
      end
    end
    local ms = math.ceil(lease_ttl / 1000) + slack
    for j = 1, n_slots do
      local key = KEYS[n_charges + j]
      redis.call('ZADD', key, num(now + lease_ttl), lease)
      if redis.call('PTTL', key) < ms then
        redis.call('PEXPIRE', key, string.format('%d', ms))
      end
    end
  end
  out[1] = refused
  return out
elseif mode == 'settle' then
  for i = 1, n_charges do
    local limit, period, cost = charge(i)
    if cost ~= 0 then
      store(KEYS[i], math.max(level_at(KEYS[i], limit) + cost * period, 0), limit)
    end
  end
  if lease ~= '' then
    for j = 1, n_slots do
      redis.call('ZREM', KEYS[n_charges + j], lease)
    end
  end
  return 0
end
return redis.error_reply('gcra.lua: unknown mode ' .. tostring(mode))
