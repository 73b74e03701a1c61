/**
 * The bench's baseline: a bare Hono app on @hono/node-server that does the minimum a predict endpoint must do (parse
 * the JSON body, serialise a JSON answer) and nothing else: no auth, validation, batching, inference or metrics.
 *
 * env: BARE_PORT, BARE_HOST (default 127.0.0.1), BARE_RESPONSE_B64 = base64 of the JSON body to answer (the bench
 * passes Triage's real response so the byte counts match exactly).
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const port = Number(process.env.BARE_PORT);
const hostname = process.env.BARE_HOST ?? '127.0.0.1';
const responseText = Buffer.from(process.env.BARE_RESPONSE_B64 ?? '', 'base64').toString('utf8');
if (!Number.isInteger(port) || port <= 0 || responseText === '') {
  process.stderr.write('bare-server: set BARE_PORT and BARE_RESPONSE_B64\n');
  process.exit(2);
}
// re-serialised per request like a real handler would; JSON.stringify(JSON.parse(x)) === x for what c.json wrote
const response: unknown = JSON.parse(responseText);
if (JSON.stringify(response) !== responseText) {
  process.stderr.write('bare-server: the response does not round-trip through JSON: sizes would differ\n');
  process.exit(2);
}

const app = new Hono();
app.get('/healthz', (c) => c.json({ status: 'ok' }));
app.post('/v1/models/:model/predict', async (c) => {
  const body: unknown = await c.req.json();
  if (typeof body !== 'object' || body === null) return c.json({ error: 'bad body' }, 400);
  return c.json(response);
});

const server = serve({ fetch: app.fetch, hostname, port });
server.once('error', (err) => {
  process.stderr.write(`bare-server: ${err.message}\n`);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => process.exit(0));
