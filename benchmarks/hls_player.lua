-- Low-latency HLS players for wrk (benchmarks/hls_load.py --wrk): every connection fetches what a player at
-- the live edge fetches, the blocking playlist reload for the next part and that part, without decoding.
--
-- wrk's script runs once per thread and cannot tell its connections apart, so the players of one thread share
-- what they know: the newest part the playlists hinted at (EXT-X-PRELOAD-HINT). Each request asks either the
-- playlist, blocking until that part exists (_HLS_msn/_HLS_part), or the part itself (answered when it is
-- written); the two alternate. A 404 for a part (its segment ended before it) moves on to the next segment.
-- Counted per thread and summed in done(): parts and playlists answered 200, the others, and the distinct
-- parts seen (what the stream produced while the players kept up).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  base = args[1]           -- "/hls/show/"
  epoch, msn, part = nil, nil, nil
  turn = 0
  parts, playlists, failed = 0, 0, 0
  seen = {}
  distinct = 0
end

local function newer(m, p)
  return msn == nil or m > msn or (m == msn and p > part)
end

request = function()
  turn = turn + 1
  if msn == nil then
    return wrk.format("GET", base .. "video.m3u8")
  end
  if turn % 2 == 0 then
    return wrk.format("GET", string.format("%svideo.m3u8?_HLS_msn=%d&_HLS_part=%d", base, msn, part))
  end
  return wrk.format("GET", string.format("%s%s.%d.%d.m4s", base, epoch, msn, part))
end

response = function(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
    if status == 404 and msn ~= nil then
      msn, part = msn + 1, 0   -- the segment ended before that part: the next one's first
    end
    return
  end
  if string.sub(body, 1, 7) == "#EXTM3U" then
    playlists = playlists + 1
    local e, m, p = string.match(body, '#EXT%-X%-PRELOAD%-HINT:TYPE=PART,URI="(%d+)%.(%d+)%.(%d+)%.m4s')
    if e ~= nil then
      m, p = tonumber(m), tonumber(p)
      if epoch ~= e or newer(m, p) then
        epoch, msn, part = e, m, p
      end
    end
  else
    parts = parts + 1
    local key = msn .. "." .. part
    if not seen[key] then
      seen[key] = true
      distinct = distinct + 1
    end
  end
end

function done(summary, latency, requests)
  local total = {parts = 0, playlists = 0, failed = 0, distinct = 0}
  for _, thread in ipairs(threads) do
    total.parts = total.parts + thread:get("parts")
    total.playlists = total.playlists + thread:get("playlists")
    total.failed = total.failed + thread:get("failed")
    total.distinct = math.max(total.distinct, thread:get("distinct"))
  end
  io.write(string.format(
    'WRK {"parts": %d, "playlists": %d, "failed": %d, "distinct_parts": %d, "requests": %d, ' ..
    '"errors_timeout": %d, "latency_ms_p50": %.1f, "latency_ms_p99": %.1f}\n',
    total.parts, total.playlists, total.failed, total.distinct, summary.requests, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
