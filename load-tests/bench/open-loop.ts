/**
 * An open-loop load generator (run as a bench child): requests leave at a fixed arrival rate whatever the server does,
 * as patients' monitors do, unlike wrk's closed loop where a slow server slows its own load. It is what k6's
 * `ramping-arrival-rate` does in `load-tests/k6/overload.js`, for machines without k6.
 *
 * env: OPEN_URL, OPEN_HEADERS (JSON), OPEN_BODY, OPEN_RATE (requests/s), OPEN_SECONDS, OPEN_MAX_IN_FLIGHT (a request
 * due while this many are in flight is not sent and is counted as dropped, like k6's dropped_iterations).
 * Prints `OPEN_LOOP_JSON {...}`: sent, dropped, socket errors, and per status the count and latency percentiles, the
 * 503s that carried Retry-After, and the latencies of the 504s.
 */
import http from 'node:http';
import { summarize } from './common.ts';

const url = new URL(process.env.OPEN_URL ?? '');
const headers = JSON.parse(process.env.OPEN_HEADERS ?? '{}') as Record<string, string>;
const body = Buffer.from(process.env.OPEN_BODY ?? '');
const rate = Number(process.env.OPEN_RATE);
const seconds = Number(process.env.OPEN_SECONDS);
const maxInFlight = Number(process.env.OPEN_MAX_IN_FLIGHT ?? 1500);
if (!(rate > 0) || !(seconds > 0)) {
  process.stderr.write('open-loop: set OPEN_URL, OPEN_RATE and OPEN_SECONDS\n');
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight, maxFreeSockets: maxInFlight });
const latencies = new Map<number, number[]>();
let sent = 0;
let dropped = 0;
let socketErrors = 0;
let retryAfter503 = 0;
let inFlight = 0;

function send(): void {
  inFlight++;
  sent++;
  const started = performance.now();
  const req = http.request(
    {
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      agent,
      headers: { ...headers, 'content-length': String(body.length) },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        inFlight--;
        const status = res.statusCode ?? 0;
        const list = latencies.get(status) ?? [];
        if (list.length === 0) latencies.set(status, list);
        list.push(performance.now() - started);
        if (status === 503 && res.headers['retry-after'] !== undefined) retryAfter503++;
      });
    },
  );
  req.on('error', () => {
    inFlight--;
    socketErrors++;
  });
  req.end(body);
}

const begun = performance.now();
const endAt = begun + seconds * 1000;
// every millisecond or so, send what the schedule says is due by now (timers are coarse; the count is exact)
await new Promise<void>((resolve) => {
  const tick = () => {
    const now = performance.now();
    const due = Math.floor((Math.min(now, endAt) - begun) * (rate / 1000));
    while (sent + dropped < due) {
      if (inFlight >= maxInFlight) dropped++;
      else send();
    }
    if (now >= endAt) resolve();
    else setTimeout(tick, 1);
  };
  tick();
});
// the stragglers get a while to answer, then count as errors
const drainUntil = performance.now() + 10_000;
while (inFlight > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 20));
socketErrors += inFlight;

const byStatus: Record<string, ReturnType<typeof summarize>> = {};
for (const [status, list] of latencies) byStatus[String(status)] = summarize(list);
process.stdout.write(
  `OPEN_LOOP_JSON ${JSON.stringify({ rate, seconds, sent, dropped, socketErrors, retryAfter503, byStatus, latencies504: latencies.get(504) ?? [] })}\n`,
);
agent.destroy();
process.exit(0);
