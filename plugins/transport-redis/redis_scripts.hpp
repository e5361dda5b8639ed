// redis_scripts.hpp: the Lua scripts of the Redis transport. Each runs atomically on the server,
// which is what makes it safe: a check and the action that depends on it cannot be split by
// another spooler's command. Keys other than KEYS[] are built from the stream prefix, so the
// transport needs a single Redis server (not a cluster).
#pragma once

namespace kodo::redis::scripts {

// Shared helpers, prepended to the scripts that need them.
#define KODO_REDIS_LUA_HELPERS                                                        \
  "local function fields(t) local f = {} for i = 1, #t, 2 do f[t[i]] = t[i + 1] end " \
  "return f end\n"                                                                    \
  "local function id_less(a, b)\n"                                                    \
  "  local am, as = string.match(a, '(%d+)-(%d+)')\n"                                 \
  "  local bm, bs = string.match(b, '(%d+)-(%d+)')\n"                                 \
  "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n"       \
  "  return am < bm or (am == bm and as < bs)\n"                                      \
  "end\n"                                                                             \
  "local function now_ms() local t = redis.call('TIME') "                             \
  "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"            \
  "local function stored_bound(prefix, key, fid, g)\n"                                \
  "  local pos = redis.call('HGET', prefix .. '#stored:' .. g['name'], fid)\n"        \
  "  if pos then return pos end\n"                                                    \
  "  if g['pending'] > 0 then return redis.call('XPENDING', key, g['name'])[2] end\n" \
  "  return g['last-delivered-id']\n"                                                 \
  "end\n"

// The data epoch: KEYS epoch key; ARGV a fresh value. Sets it when missing and returns the
// one in place. A producer that finds it changed after a reconnect knows Redis lost its data
// (restarted without persistence, or failed over to an empty replica).
inline constexpr const char *kEpoch =
    "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n"
    "return redis.call('GET', KEYS[1])\n";

// Announces an execution once: KEYS registry stream, executions hash; ARGV fid, username.
// The hash remembers the registry entry's id, so a repeated announcement (a producer that
// resent a pipeline after a reconnect) adds nothing, and cleanup knows what to acknowledge.
inline constexpr const char *kRegister =
    "if redis.call('HSETNX', KEYS[2], ARGV[1], '') == 0 then return false end\n"
    "local id = redis.call('XADD', KEYS[1], '*', 'fid', ARGV[1], 'username', ARGV[2])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], id)\n"
    "return id\n";

// Joins the registry's group: KEYS registry; ARGV group. The first group of a registry starts
// at its beginning (executions announced before any spooler ran are not missed); a group made
// later starts with what is announced after it, as in the in-process transport.
inline constexpr const char *kJoin = KODO_REDIS_LUA_HELPERS
    "local groups = {}\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 then groups = redis.call('XINFO', 'GROUPS', KEYS[1]) "
    "end\n"
    "for _, g in ipairs(groups) do if fields(g)['name'] == ARGV[1] then return 0 end end\n"
    "redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], #groups == 0 and '0' or '$', "
    "'MKSTREAM')\n"
    "return 1\n";

// Keeps a consumer's executions its own: KEYS registry; ARGV group, consumer. Every registry
// entry pending for the consumer is its execution; re-claiming them for itself resets their
// idle time, so no other consumer's XAUTOCLAIM takes them. Returns the ids it still holds
// (one another consumer took is missing, and the caller stops reading that execution).
inline constexpr const char *kHeartbeat =
    "local out, start = {}, '-'\n"
    "while true do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 1000, ARGV[2])\n"
    "  if #p == 0 then break end\n"
    "  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}\n"
    "  for _, e in ipairs(p) do args[#args + 1] = e[1]; out[#out + 1] = e[1] end\n"
    "  args[#args + 1] = 'JUSTID'\n"
    "  redis.call(unpack(args))\n"
    "  if #p < 1000 then break end\n"
    "  start = '(' .. p[#p][1]\n"
    "end\n"
    "return out\n";

// Records that an execution's final event is stored: KEYS finished zset; ARGV fid, grace ms.
// Its stream may go once the grace has passed (server time, so spoolers' clocks don't matter).
inline constexpr const char *kFinish = KODO_REDIS_LUA_HELPERS
    "redis.call('ZADD', KEYS[1], 'NX', now_ms() + tonumber(ARGV[2]), ARGV[1])\n"
    "return 1\n";

// Makes a consumer the reader of an execution's stream: KEYS stream, stored-positions hash of
// the group; ARGV group, fid. Creates the group if new and sets it to the position recorded as
// stored (recording 0-0 when there is none), so reading goes on right after it. Returns
// {position, the group's previous last delivered id, the number of entries ever added up to
// the position}, or nil when the stream is gone. That number (entries-added less the entries
// after the position) is what numbers the kodosumi fork's entries, which carry no seq: it
// stays right however far the stream was trimmed below the position.
inline constexpr const char *kAdopt = KODO_REDIS_LUA_HELPERS
    "if redis.call('EXISTS', KEYS[1]) == 0 then return false end\n"
    "local delivered, found = '0-0', false\n"
    "for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do\n"
    "  local f = fields(g)\n"
    "  if f['name'] == ARGV[1] then found = true; delivered = f['last-delivered-id'] end\n"
    "end\n"
    "local pos = redis.call('HGET', KEYS[2], ARGV[2])\n"
    "if not pos then pos = '0-0'; redis.call('HSET', KEYS[2], ARGV[2], pos) end\n"
    "if found then redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], pos)\n"
    "else redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], pos) end\n"
    "local added = fields(redis.call('XINFO', 'STREAM', KEYS[1]))['entries-added']\n"
    "local before\n"
    "if added then before = added - #redis.call('XRANGE', KEYS[1], '(' .. pos, '+')\n"
    "else before = #redis.call('XRANGE', KEYS[1], '-', pos) end\n"
    "return {pos, delivered, before}\n";

// The owner's upkeep of its executions: KEYS finished, executions, registry; ARGV prefix,
// group, fid... For each fid: adds its group's lag to the total, and deletes its stream when
// it is finished, its grace has passed and it is consumed (every group on the stream has
// stored its last entry, see stored_bound, and every group of the registry has read the
// announcement), then acknowledges and deletes the announcement. A stream that no
// longer exists is forgotten the same way. Returns {deleted fids, lag}.
inline constexpr const char *kReap = KODO_REDIS_LUA_HELPERS
    "local now, deleted, lag = now_ms(), {}, 0\n"
    "local registry_groups = {}\n"
    "if redis.call('EXISTS', KEYS[3]) == 1 then\n"
    "  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[3])) do\n"
    "    registry_groups[#registry_groups + 1] = fields(g) end\n"
    "end\n"
    "for i = 3, #ARGV do\n"
    "  local fid = ARGV[i]\n"
    "  local key = ARGV[1] .. fid\n"
    "  local exists = redis.call('EXISTS', key) == 1\n"
    "  local consumed, groups = true, {}\n"
    "  if exists then\n"
    "    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)\n"
    "    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do\n"
    "      local f = fields(g)\n"
    "      groups[#groups + 1] = f['name']\n"
    "      if f['name'] == ARGV[2] and type(f['lag']) == 'number' then lag = lag + f['lag'] end\n"
    "      local bound = stored_bound(ARGV[1], key, fid, f)\n"
    "      if #last > 0 and id_less(bound, last[1][1]) then consumed = false end\n"
    "    end\n"
    "  end\n"
    "  local rid = redis.call('HGET', KEYS[2], fid)\n"
    "  if rid and rid ~= '' then\n"
    "    for _, g in ipairs(registry_groups) do\n"
    "      if id_less(g['last-delivered-id'], rid) then consumed = false end\n"
    "    end\n"
    "  end\n"
    "  local due = redis.call('ZSCORE', KEYS[1], fid)\n"
    "  if (not exists) or (due and tonumber(due) <= now and consumed) then\n"
    "    redis.call('DEL', key)\n"
    "    for _, g in ipairs(groups) do redis.call('HDEL', ARGV[1] .. '#stored:' .. g, fid) end\n"
    "    redis.call('HDEL', ARGV[1] .. '#stored:' .. ARGV[2], fid)\n"
    "    if rid and rid ~= '' then\n"
    "      for _, g in ipairs(registry_groups) do redis.call('XACK', KEYS[3], g['name'], rid) "
    "end\n"
    "      redis.call('XDEL', KEYS[3], rid)\n"
    "    end\n"
    "    redis.call('HDEL', KEYS[2], fid)\n"
    "    redis.call('ZREM', KEYS[1], fid)\n"
    "    deleted[#deleted + 1] = fid\n"
    "  end\n"
    "end\n"
    "return {deleted, lag}\n";

// Trims a stream that grew past its maximum length, but only below the oldest entry some
// group still needs: KEYS stream; ARGV max length, prefix, fid. A group's bound is the position
// its spoolers recorded as stored (<prefix>#stored:<group>); for a group that records none
// (not kodo's), its oldest pending entry, or with none pending the last entry delivered to it.
// Returns how many entries went.
inline constexpr const char *kTrim = KODO_REDIS_LUA_HELPERS
    "if redis.call('XLEN', KEYS[1]) <= tonumber(ARGV[1]) then return 0 end\n"
    "local safe = nil\n"
    "for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do\n"
    "  local bound = stored_bound(ARGV[2], KEYS[1], ARGV[3], fields(g))\n"
    "  if safe == nil or id_less(bound, safe) then safe = bound end\n"
    "end\n"
    "if safe == nil then return 0 end\n"
    "return redis.call('XTRIM', KEYS[1], 'MINID', '~', safe)\n";

// Forgets consumers of the registry's group that hold nothing and were idle far longer than
// any claim time (dead spoolers), so XINFO CONSUMERS stays readable: KEYS registry;
// ARGV group, idle ms. A live consumer that is removed is re-made by its next read.
inline constexpr const char *kForgetDeadConsumers = KODO_REDIS_LUA_HELPERS
    "local n = 0\n"
    "for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do\n"
    "  local f = fields(c)\n"
    "  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

#undef KODO_REDIS_LUA_HELPERS

}  // namespace kodo::redis::scripts
