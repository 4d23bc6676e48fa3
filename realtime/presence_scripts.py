"""The Lua scripts behind presence (realtime/presence.py has the key layout): each runs atomically in Redis."""

# The user's merged state is computed from their connections' fields; `prune` drops fields of dead
# processes (heartbeat gone) and this process's fields whose connection is no longer registered.
APPLY = r"""
local P, proc_prefix = ARGV[1], ARGV[2]
local interval, ttl, mode = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local users_key, pub_key, last_key, info_key, ver_key = P .. 'u', P .. 'p', P .. 't', P .. 'i', P .. 'v'
local alive, own, ownlive, grace = {}, nil, {}, 0
local function live(process)
  local known = alive[process]
  if known == nil then
    known = redis.call('EXISTS', proc_prefix .. process) == 1
    alive[process] = known
  end
  return known
end
local function merged(user, prune)
  local key = P .. 'c:' .. user
  local all = redis.call('HGETALL', key)
  local n, vt, et, v, e = 0, -1, -1, '', ''
  for i = 1, #all, 2 do
    local process, conn = string.match(all[i], '^(.*)|([^|]*)$')
    local ts, view, edit = string.match(all[i + 1], '^(%d+)|([^|]*)|([^|]*)$')
    ts = tonumber(ts) or 0
    local keep = true
    if prune then
      if not process or not live(process) then keep = false
      -- this process's field of a connection it no longer holds (its leave failed); a field set
      -- in the last `grace` ms may belong to a connection registered after the sweep began
      elseif process == own and not ownlive[conn] and ts < now - grace then keep = false end
    end
    if keep then
      n = n + 1
      if view and view ~= '' and ts > vt then vt, v = ts, view end
      if edit and edit ~= '' and ts > et then et, e = ts, edit end
    else
      redis.call('HDEL', key, all[i])
    end
  end
  if n == 0 then return nil end
  redis.call('EXPIRE', key, ttl)
  return v .. '|' .. e
end
local out = {}
local function decide(user, prune)
  local m = merged(user, prune)
  local pub = redis.call('HGET', pub_key, user)
  local old = pub and string.match(pub, '^%d+|%d+|(.*)$')
  if m == nil and not pub then
    redis.call('SREM', users_key, user)
    redis.call('HDEL', info_key, user)
    return
  end
  if m ~= nil and old == m then return end
  local last = tonumber(redis.call('HGET', last_key, user) or '0')
  -- only changes of what an online user views or edits are throttled: joining and leaving go out
  -- at once, so the published state says who is online the moment their connection is
  if pub and m ~= nil and now - last < interval then
    table.insert(out, {user, 'wait', interval - (now - last)})
    return
  end
  local ver = redis.call('INCR', ver_key)
  local profile = redis.call('HGET', info_key, user) or '{}'
  redis.call('HSET', last_key, user, now)
  local state, view, edit = 'left', '', ''
  if m == nil then
    redis.call('HDEL', pub_key, user)
  else
    view, edit = string.match(m, '^([^|]*)|([^|]*)$')
    if not pub then state = 'joined'
    elseif edit ~= '' then state = 'editing'
    elseif view ~= '' then state = 'viewing'
    else state = 'idle' end
    redis.call('HSET', pub_key, user, ver .. '|' .. now .. '|' .. m)
  end
  table.insert(out, {user, 'pub', ver, state, view, edit, now, profile})
end
if mode == 'sweep' then
  own, grace = ARGV[6], tonumber(ARGV[7])
  for i = 8, #ARGV do ownlive[ARGV[i]] = true end
  for _, user in ipairs(redis.call('SMEMBERS', users_key)) do decide(user, true) end
else
  local user = ARGV[6]
  if mode == 'set' then
    redis.call('HSET', P .. 'c:' .. user, ARGV[7], now .. '|' .. ARGV[8])
    redis.call('SADD', users_key, user)
    if ARGV[9] ~= '' then redis.call('HSET', info_key, user, ARGV[9]) end
  elseif mode == 'del' then
    redis.call('HDEL', P .. 'c:' .. user, ARGV[7])
  end
  decide(user, false)
end
for _, k in ipairs({users_key, pub_key, last_key, info_key, ver_key}) do redis.call('EXPIRE', k, ttl) end
return out
"""

# The published states with the version they are at: deltas after that version follow the snapshot.
SNAPSHOT = r"""
local P = ARGV[1]
return {redis.call('GET', P .. 'v') or '0', redis.call('HGETALL', P .. 'p'), redis.call('HGETALL', P .. 'i')}
"""
