/**
 * An open-loop load generator (run as a bench child): requests leave at a fixed arrival rate whatever the server does,
 * as patients' monitors do, unlike wrk's closed loop where a slow server slows its own load. It is what k6's
 * `ramping-arrival-rate` does in `load-tests/k6/overload.js`, for machines without k6.
 *
 * It speaks HTTP through lean-http.ts (raw sockets, one prebuilt request, a parser that reads only the status,
 * Retry-After and the body's length): node:http's client cost about as much CPU per request as the gateway serving it,
 * so on the two cores it shares with the gateway it both starved the gateway and could not offer the rate.
 *
 * env: OPEN_URL, OPEN_HEADERS (JSON), OPEN_BODY, OPEN_RATE (requests/s), OPEN_SECONDS (at that rate, after the ramp),
 * OPEN_RAMP_SECONDS and OPEN_RAMP_FROM (a linear climb from that rate first; none by default), OPEN_MAX_IN_FLIGHT (a request
 * due while this many are in flight is not sent and is counted as dropped, like k6's dropped_iterations; it is also
 * the most connections opened: one request in flight per connection).
 * Prints `OPEN_LOOP_JSON {...}`: sent, dropped, socket errors, and per status the count and latency percentiles, the
 * 503s that carried Retry-After, the latencies of the 504s, the connections opened, the client's own CPU time, and a
 * timeline: per second, what was sent and answered (by status) and the slowest answer.
 */
import { summarize } from './common.ts';
import { buildRequest, LeanPool } from './lean-http.ts';

const url = new URL(process.env.OPEN_URL ?? '');
const headers = JSON.parse(process.env.OPEN_HEADERS ?? '{}') as Record<string, string>;
const body = Buffer.from(process.env.OPEN_BODY ?? '');
const rate = Number(process.env.OPEN_RATE);
const seconds = Number(process.env.OPEN_SECONDS);
const maxInFlight = Number(process.env.OPEN_MAX_IN_FLIGHT ?? 1500);
// a ramp, as k6's ramping-arrival-rate climbs to the peak (overload.js): from OPEN_RAMP_FROM requests/s to OPEN_RATE
// over OPEN_RAMP_SECONDS, then OPEN_SECONDS at OPEN_RATE (no ramp by default)
const rampSeconds = Number(process.env.OPEN_RAMP_SECONDS ?? 0);
const rampFrom = Number(process.env.OPEN_RAMP_FROM ?? rate);
if (!(rate > 0) || !(seconds > 0) || !(rampSeconds >= 0) || !(rampFrom >= 0) || url.protocol !== 'http:') {
  process.stderr.write('open-loop: set OPEN_URL (http://), OPEN_RATE and OPEN_SECONDS\n');
  process.exit(2);
}

const latencies = new Map<number, number[]>();
let retryAfter503 = 0;
/** per second of the run, by when the request was sent: [sent, 200s, 503s, 504s, slowest answer (ms)] */
const timeline: Array<[number, number, number, number, number]> = [];
const secondOf = (at: number) => {
  const i = Math.max(0, Math.floor((at - begun) / 1000));
  while (timeline.length <= i) timeline.push([0, 0, 0, 0, 0]);
  return timeline[i] as [number, number, number, number, number];
};
const pool = new LeanPool({
  host: url.hostname,
  port: Number(url.port || 80),
  request: buildRequest(url, 'POST', headers, body),
  maxConnections: maxInFlight,
  onResponse(res, startedAt) {
    let list = latencies.get(res.status);
    if (!list) {
      list = [];
      latencies.set(res.status, list);
    }
    const ms = performance.now() - startedAt;
    list.push(ms);
    if (res.status === 503 && res.retryAfter !== undefined) retryAfter503++;
    const second = secondOf(startedAt);
    if (res.status === 200) second[1]++;
    else if (res.status === 503) second[2]++;
    else if (res.status === 504) second[3]++;
    second[4] = Math.max(second[4], Math.round(ms));
  },
});

let sent = 0;
let dropped = 0;
const cpuBefore = process.cpuUsage();
const begun = performance.now();
const rampMs = rampSeconds * 1000;
const endAt = begun + rampMs + seconds * 1000;
/** requests due `ms` after the start: the rate climbs linearly over the ramp, then holds */
const dueBy = (ms: number) => {
  const inRamp = Math.min(ms, rampMs);
  const ramped = rampMs > 0 ? (rampFrom * inRamp + ((rate - rampFrom) * inRamp * inRamp) / (2 * rampMs)) / 1000 : 0;
  return Math.floor(ramped + (Math.max(0, ms - rampMs) * rate) / 1000);
};
// every millisecond or so, send what the schedule says is due by now (timers are coarse; the count is exact)
await new Promise<void>((resolve) => {
  const tick = () => {
    const now = performance.now();
    const due = dueBy(Math.min(now, endAt) - begun);
    while (sent + dropped < due) {
      if (pool.send()) {
        sent++;
        secondOf(now)[0]++;
      } else dropped++;
    }
    if (now >= endAt) resolve();
    else setTimeout(tick, 1);
  };
  tick();
});
// the stragglers get a while to answer, then count as errors
const drainUntil = performance.now() + 10_000;
while (pool.inFlight > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 20));
const cpu = process.cpuUsage(cpuBefore);
const socketErrors = pool.stats.socketErrors + pool.inFlight;

const byStatus: Record<string, ReturnType<typeof summarize>> = {};
for (const [status, list] of latencies) byStatus[String(status)] = summarize(list);
process.stdout.write(
  `OPEN_LOOP_JSON ${JSON.stringify({
    rate,
    seconds,
    rampSeconds,
    sent,
    dropped,
    socketErrors,
    retryAfter503,
    byStatus,
    latencies504: latencies.get(504) ?? [],
    connections: pool.stats.opened,
    timeline,
    clientCpuMs: Math.round((cpu.user + cpu.system) / 1000),
  })}\n`,
);
pool.close();
process.exit(0);
