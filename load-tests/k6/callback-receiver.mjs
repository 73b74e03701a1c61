#!/usr/bin/env node
// The callback receiver for the async k6 runs (k6 cannot run an HTTP server): it verifies each callback's Standard
// Webhooks signature with the client's secret, records the first verified event per job, and answers k6's polls.
//
//   CALLBACK_SECRET=whsec_… [PORT=9000] [HOST=127.0.0.1] node load-tests/k6/callback-receiver.mjs
//
//   POST /hook             a callback (CloudEvent, signed): 204 when the signature verifies, 401 when not
//   GET  /events/:jobId    200 {jobId, type, eventId, verified, receivedAt, deliveries} once one arrived, else 404
//   GET  /stats            counts: received, verified, rejected (bad signature), duplicates (same webhook-id again)
//
// On SIGINT/SIGTERM it prints the counts and exits 1 if any callback failed verification. Run it from the repository
// (it imports `standardwebhooks` from node_modules), or in the dev cluster with `kubectl apply -k load-tests/k6`.
import { createServer } from 'node:http';
import { Webhook } from 'standardwebhooks';

const PORT = Number(process.env.PORT || 9000);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.CALLBACK_SECRET || '';
const MAX_BODY = 1024 * 1024;

if (!/^whsec_[A-Za-z0-9+/=]+$/.test(SECRET)) {
  process.stderr.write("callback-receiver: set CALLBACK_SECRET to the client key's callbackSecret (whsec_…)\n");
  process.exit(64);
}
const webhook = new Webhook(SECRET);

/** jobId → the first verified event of that job */
const events = new Map();
const seenIds = new Set();
const stats = { received: 0, verified: 0, rejected: 0, duplicates: 0 };

function send(res, status, body) {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function onHook(req, res) {
  stats.received++;
  let body;
  try {
    body = await readBody(req);
  } catch {
    send(res, 413);
    return;
  }
  let event;
  try {
    // checks the HMAC over id.timestamp.body and that the timestamp is recent (replays are refused)
    event = webhook.verify(body, {
      'webhook-id': String(req.headers['webhook-id'] || ''),
      'webhook-timestamp': String(req.headers['webhook-timestamp'] || ''),
      'webhook-signature': String(req.headers['webhook-signature'] || ''),
    });
  } catch (err) {
    stats.rejected++;
    process.stderr.write(`callback-receiver: rejected a callback: ${err.message}\n`);
    send(res, 401, { error: 'signature does not verify' });
    return;
  }
  stats.verified++;
  const webhookId = String(req.headers['webhook-id']);
  if (seenIds.has(webhookId)) {
    // a retry of an event already delivered (the id is stable across retries): acknowledge, count once
    stats.duplicates++;
    const known = events.get(event?.data?.jobId);
    if (known) known.deliveries++;
    send(res, 204);
    return;
  }
  seenIds.add(webhookId);
  const jobId = event?.data?.jobId;
  if (typeof jobId === 'string' && !events.has(jobId)) {
    events.set(jobId, {
      jobId,
      type: event.type,
      eventId: webhookId,
      verified: true,
      receivedAt: new Date().toISOString(),
      deliveries: 1,
    });
  }
  send(res, 204);
}

const server = createServer((req, res) => {
  const url = new URL(req.url || '/', 'http://receiver');
  if (req.method === 'POST' && url.pathname === '/hook') {
    onHook(req, res).catch(() => send(res, 500));
    return;
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    send(res, 200, { ...stats, jobs: events.size });
    return;
  }
  const match = /^\/events\/([\w-]{1,64})$/.exec(url.pathname);
  if (req.method === 'GET' && match) {
    const event = events.get(match[1]);
    send(res, event ? 200 : 404, event || { error: 'no callback for this job yet' });
    return;
  }
  send(res, 404, { error: 'not found' });
});

server.listen(PORT, HOST, () => {
  process.stdout.write(`callback-receiver: listening on http://${HOST}:${PORT}/hook\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    process.stdout.write(`callback-receiver: ${JSON.stringify({ ...stats, jobs: events.size })}\n`);
    server.close();
    process.exit(stats.rejected > 0 ? 1 : 0);
  });
}
