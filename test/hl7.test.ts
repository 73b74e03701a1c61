/**
 * HL7v2 ORU^R01 over MLLP (a real socket) and over HTTP: the real v2.4 sample of /work/shared/data/hl7v2 and
 * vital-sign messages built on its MSH and PID, scored through the manifest's FHIR mapping and the sync tier, and
 * answered AA (the score, as /predict gives it), AE (taken but not scored: unknown codes, bad units, preliminary
 * results, no PID) or AR (no MSH, wrong version, not ORU^R01, no model).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { Hl7Door } from '../src/ingress/hl7/door.ts';
import { startMllp } from '../src/ingress/hl7/mllp.ts';
import { SILENT_ACTION } from '../src/serving/scorer.ts';
import { buildIngressGateway } from './ingress-support.ts';
import {
  captureLogs,
  deletePrefix,
  makeKeys,
  makePrefix,
  removeDir,
  type TestGateway,
  tempDir,
  tempModels,
} from './support/index.ts';

const SAMPLE = fileURLToPath(new URL('../../shared/data/hl7v2/ORU-R01-RMGEAD.hl7', import.meta.url));
const keys = makeKeys();
const prefix = makePrefix('hl7');
const { logger, lines: logLines } = captureLogs('debug');
let gw: TestGateway;
let modelsDir: string;
let dataDir: string;
let mllp: Awaited<ReturnType<typeof startMllp>>;
let sample: string;
let msh: string;
let pid: string;

/** An HL7 time (UTC) `minutes` ago. */
const ago = (minutes: number) =>
  `${new Date(Date.now() - minutes * 60_000).toISOString().replace(/[-:T]/g, '').slice(0, 14)}+0000`;
const obx = (n: number, type: string, code: string, value: string, unit = '', status = 'F', system = 'LN') =>
  `OBX|${n}|${type}|${code}^^${system}||${value}|${unit}|||||${status}|||${ago(30)}`;

/** NEWS2's seven parameters, as a monitor's interface engine sends them (temperature in Fahrenheit). */
function vitals(over: Record<number, string> = {}): string[] {
  const rows = [
    obx(1, 'NM', '9279-1', '22', '/min'),
    obx(2, 'NM', '59408-5', '93', '%'),
    obx(3, 'NM', '3151-8', '2', 'L/min'),
    obx(4, 'NM', '8480-6', '105', 'mm[Hg]'),
    obx(5, 'NM', '8867-4', '115', '/min'),
    obx(6, 'CE', '67775-7', '248234008^Alert^SCT'),
    obx(7, 'NM', '8310-5', '101.3', '[degF]'),
  ];
  return rows.map((r, i) => over[i + 1] ?? r);
}
const message = (segments: string[]) => segments.join('\r');

before(async () => {
  sample = (await readFile(SAMPLE, 'utf8')).trim();
  const lines = sample.split(/\r\n|\r|\n/);
  msh = lines.find((l) => l.startsWith('MSH')) as string;
  pid = lines.find((l) => l.startsWith('PID')) as string;
  modelsDir = await tempModels({ news2: null, deterioration: null });
  dataDir = await tempDir('hl7');
  gw = await buildIngressGateway({ prefix, keys, modelsDir, dataDir, fhirServers: { servers: [] }, logger });
  const { deps } = gw.gateway;
  const door = new Hl7Door({ catalog: deps.catalog, sync: deps.sync, models: ['news2'], logger });
  mllp = await startMllp({ host: '127.0.0.1', port: 0, door, logger, maxMessageBytes: 64 * 1024 });
});

after(async () => {
  await mllp?.close();
  await gw?.close();
  await deletePrefix(prefix);
  await removeDir(dataDir);
  await removeDir(modelsDir);
});

/** Sends frames over one MLLP connection and reads `count` ACK frames back. */
async function overMllp(messages: string[], count = messages.length): Promise<string[]> {
  const socket = connect(mllp.port, '127.0.0.1');
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.write(Buffer.concat(messages.map((m) => Buffer.from(`\x0b${m}\x1c\r`))));
  const acks: string[] = [];
  let buffer = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (d) => {
      buffer += d.toString();
      let end = buffer.indexOf('\x1c\r');
      while (end >= 0) {
        acks.push(buffer.slice(buffer.indexOf('\x0b') + 1, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf('\x1c\r');
      }
      if (acks.length >= count) resolve();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve());
    setTimeout(() => reject(new Error(`${acks.length} of ${count} ACKs in 30 s`)), 30_000).unref();
  });
  socket.destroy();
  return acks;
}

const seg = (ack: string, name: string) =>
  ack
    .split('\r')
    .find((s) => s.startsWith(`${name}|`))
    ?.split('|') ?? [];

describe('ORU^R01 over MLLP', () => {
  test('the vital signs of a real ORU header and PID are scored: AA with the score /predict gives', async () => {
    const [ack] = await overMllp([message([msh, pid, ...vitals()])]);
    const msa = seg(ack as string, 'MSA');
    assert.equal(msa[1], 'AA', String(ack));
    assert.equal(msa[2], 'CNTRL-3456', 'MSA-2 echoes the control id');
    assert.equal(seg(ack as string, 'MSH')[8], 'ACK^R01');
    const predicted = await gw.call('POST', '/v1/models/news2/predict', keys.client, {
      instances: [
        {
          respirationRate: 22,
          spo2: 93,
          onOxygen: true,
          systolicBP: 105,
          pulse: 115,
          consciousness: 'alert',
          temperature: 38.5,
        },
      ],
    });
    assert.equal(predicted.status, 200, predicted.text);
    const total = predicted.body.predictions[0].news2Total;
    assert.match(msa[3] as string, new RegExp(`^news2 v1 \\(.+\\): .*news2Total=${total}\\b`));
    assert.match(msa[3] as string, /assumed spo2Scale/);
  });

  test('the sample as sent (a glucose result): AE naming what NEWS2 needs, and the code it could not use', async () => {
    const [ack] = await overMllp([sample.replace(/\r?\n/g, '\r')]);
    assert.equal(seg(ack as string, 'MSA')[1], 'AE', String(ack));
    const err = seg(ack as string, 'ERR');
    assert.match(err[3] as string, /^101\^Required field missing\^HL70357$/);
    assert.match(err[8] as string, /missing respirationRate \(looked for http:\/\/loinc.org\\S\\9279-1|no data/);
  });

  test('two messages in one write are answered in order; a frame without MSH gets an AR', async () => {
    const second = message([msh.replace('CNTRL-3456', 'CNTRL-2'), pid, ...vitals()]);
    const acks = await overMllp([message([pid, ...vitals()]), message([msh, pid, ...vitals()]), second]);
    assert.equal(acks.length, 3);
    assert.equal(seg(acks[0] as string, 'MSA')[1], 'AR');
    assert.match(seg(acks[0] as string, 'ERR')[3] as string, /^100\^/);
    assert.deepEqual(
      acks.slice(1).map((a) => seg(a, 'MSA').slice(1, 3)),
      [
        ['AA', 'CNTRL-3456'],
        ['AA', 'CNTRL-2'],
      ],
    );
  });

  test('a frame past the size bound closes the connection', async () => {
    const acks = await overMllp([message([msh, pid, `NTE|1||${'x'.repeat(100 * 1024)}`])], 1);
    assert.deepEqual(acks, []);
  });
});

describe('broken messages over HTTP (POST /v1/hl7)', () => {
  const post = (body: string, key = keys.client, type = 'x-application/hl7-v2+er7') =>
    gw.call('POST', '/v1/hl7', key, body, { 'content-type': type });

  test('AA over HTTP, segments separated by LF', async () => {
    const res = await post([msh, pid, ...vitals()].join('\n'));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('content-type'), 'x-application/hl7-v2+er7; charset=utf-8');
    assert.equal(seg(res.text, 'MSA')[1], 'AA');
  });

  const cases: Array<[string, () => string, string, string, RegExp]> = [
    ['missing MSH', () => message([pid, ...vitals()]), 'AR', '100', /MSH/],
    // answered with delimiters of its own, an ACK would be unreadable (empty separators, or a NUL copied into it)
    ['an MSH that declares no delimiters', () => 'MSH', 'AR', '100', /delimiters/],
    ['a NUL field separator', () => message([msh.replaceAll('|', '\u0000'), pid]), 'AR', '100', /delimiters/],
    ['wrong version', () => message([msh.replace('|2.4|', '|2.1|'), pid, ...vitals()]), 'AR', '203', /version "2.1"/],
    ['not an ORU^R01', () => message([msh.replace('ORU^R01', 'ADT^A01'), pid]), 'AR', '200', /ADT\\S\\A01/],
    ['no PID', () => message([msh, ...vitals()]), 'AE', '101', /no PID/],
    [
      'two patients in one message',
      () => message([msh, pid, ...vitals(), pid.replace('555-44-4444', '555-44-5555'), ...vitals()]),
      'AR',
      '100',
      /more than one PID/,
    ],
    [
      'an OBX without a time, under an order without one',
      () => message([msh, pid, ...vitals({ 1: obx(1, 'NM', '9279-1', '22', '/min').replace(/\|[^|]*$/, '|') })]),
      'AE',
      '101',
      /OBX 1: no observation time/,
    ],
    [
      'unknown codes',
      () => message([msh, pid, ...vitals({ 1: obx(1, 'NM', '99999-9', '22', '/min') })]),
      'AE',
      '101',
      /missing respirationRate/,
    ],
    [
      'bad units',
      () => message([msh, pid, ...vitals({ 2: obx(2, 'NM', '59408-5', '93', 'kg') })]),
      'AE',
      '101',
      /unit "kg" cannot be converted to %/,
    ],
    [
      'a preliminary result',
      () => message([msh, pid, ...vitals({ 5: obx(5, 'NM', '8867-4', '115', '/min', 'P') })]),
      'AE',
      '101',
      /missing pulse .*preliminary/,
    ],
    [
      'a value out of range',
      () => message([msh, pid, ...vitals({ 4: obx(4, 'NM', '8480-6', '1050', 'mm[Hg]') })]),
      'AE',
      '102',
      /systolicBP/,
    ],
  ];
  for (const [name, build, ack, code, reason] of cases) {
    test(`${name}: ${ack} ${code}`, async () => {
      const res = await post(build());
      assert.equal(res.status, ack === 'AR' ? 400 : 200, res.text);
      assert.equal(seg(res.text, 'MSA')[1], ack, res.text);
      const err = seg(res.text, 'ERR');
      assert.equal((err[3] as string).split('^')[0], code, res.text);
      assert.match(err[8] as string, reason);
    });
  }

  test('a client that may not call the model: AR; a wrong media type: 415 problem+json', async () => {
    const res = await post(message([msh, pid, ...vitals()]), keys.deteriorationOnly);
    assert.equal(res.status, 400);
    assert.match(seg(res.text, 'ERR')[3] as string, /^204\^/);
    const json = await post('{}', keys.client, 'application/json');
    assert.equal(json.status, 415);
    assert.equal(json.body.code, 'unsupported_media_type');
    assert.equal((await gw.call('POST', '/v1/hl7', undefined, 'MSH', { 'content-type': 'text/plain' })).status, 401);
  });

  test('a Content-Length past the limit: 413 problem+json at once, not a wait for a body that never comes', async () => {
    // a real socket: in process, a body ends where its bytes end; here the gateway would wait for the declared rest
    const server = serve({
      fetch: gw.app.fetch,
      hostname: '127.0.0.1',
      port: 0,
      createServer: gw.gateway.createServer,
    });
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const declared = gw.deps.options.maxBodyBytes + 1;
      const res = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/v1/hl7',
            headers: {
              authorization: `Bearer ${keys.client}`,
              'content-type': 'x-application/hl7-v2+er7',
              'content-length': String(declared),
            },
          },
          (r) => {
            let body = '';
            r.setEncoding('utf8');
            r.on('data', (chunk: string) => {
              body += chunk;
            });
            r.on('end', () => resolve({ status: r.statusCode ?? 0, type: String(r.headers['content-type']), body }));
          },
        );
        req.on('error', reject);
        req.write(msh); // and never the rest
      });
      assert.equal(res.status, 413, res.body);
      assert.match(res.type, /^application\/problem\+json/);
      assert.equal(JSON.parse(res.body).code, 'payload_too_large');
    } finally {
      const listening = server as http.Server;
      listening.closeAllConnections();
      await new Promise((resolve) => listening.close(resolve));
    }
  });

  test('nothing of a message reaches the logs: no name, identifier or control id', () => {
    const text = logLines.join('\n');
    assert.ok(logLines.some((l) => l.includes('"hl7 message"')));
    for (const secret of ['EVERYWOMAN', '555-44-4444', 'CNTRL-3456', 'FERNWOOD', '19620320']) {
      assert.ok(!text.includes(secret), secret);
    }
  });
});

describe('a model in silent deployment', () => {
  test('its ORU is scored and acknowledged AA with no score: the standard-protocol action in its place', async () => {
    const routing = '/v1/models/news2/routing';
    const set = await gw.call('PUT', `${routing}/silent`, keys.admin, { version: '1', reason: 'CR-12: silent trial' });
    assert.equal(set.status, 200, set.text);
    try {
      const [ack] = await overMllp([message([msh, pid, ...vitals()])]);
      const msa = seg(ack as string, 'MSA');
      assert.equal(msa[1], 'AA', String(ack));
      assert.equal(msa[3], `news2 v1 (${gw.deps.catalog.get('news2')?.manifest.owner.team}): ${SILENT_ACTION}`);
      assert.ok(!/news2Total|risk=/.test(String(ack)), 'no score anywhere in the ACK');
    } finally {
      const back = await gw.call('POST', `${routing}/promote`, keys.admin, { version: '1', reason: 'CR-13: shown' });
      assert.equal(back.status, 200, back.text);
    }
  });
});

describe('outcomes of HL7-scored predictions (POST /v1/outcomes)', () => {
  // the sample's own sender and control id: MSH-3 "GHH LAB", MSH-4 "ELAB-3", MSH-10 "CNTRL-3456"
  const sender = { sendingApplication: 'GHH LAB', sendingFacility: 'ELAB-3' };
  const outcome = (by: Record<string, unknown>, value = true, observedAt = new Date().toISOString()) =>
    gw.call('POST', '/v1/outcomes', keys.client, { ...by, outcome: value, observedAt });
  const totalOf = (ack: string) => Number(/news2Total=(\d+)/.exec(seg(ack, 'MSA')[3] as string)?.[1]);

  test('over MLLP: joined by the message control id within its sender, as the ACK echoed it', async () => {
    const [ack] = await overMllp([message([msh, pid, ...vitals()])]);
    assert.equal(seg(ack as string, 'MSA')[1], 'AA', String(ack));
    const controlId = seg(ack as string, 'MSA')[2] as string;
    assert.equal(controlId, 'CNTRL-3456');
    const res = await outcome({ hl7: { controlId, ...sender } });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.model, 'news2');
    assert.equal(res.body.version, '1');
    assert.equal(res.body.score, totalOf(ack as string));
    // the same control id from another sender names no prediction: control ids are unique only per sender
    const other = await outcome({ hl7: { controlId, ...sender, sendingFacility: 'ELAB-4' } });
    assert.equal(other.status, 404, other.text);
  });

  test('over HTTP: by the X-Request-Id answered, or by the control id: one prediction, one outcome', async () => {
    const requestId = randomUUID();
    const controlId = 'CNTRL-3456-H';
    const res = await gw.call(
      'POST',
      '/v1/hl7',
      keys.client,
      message([msh.replace('CNTRL-3456', controlId), pid, ...vitals()]),
      { 'content-type': 'x-application/hl7-v2+er7', 'x-request-id': requestId },
    );
    assert.equal(seg(res.text, 'MSA')[1], 'AA', res.text);
    assert.equal(res.headers.get('x-request-id'), requestId);
    const observedAt = new Date().toISOString();
    const byRequest = await outcome({ requestId }, true, observedAt);
    assert.equal(byRequest.status, 201, byRequest.text);
    assert.equal(byRequest.body.score, totalOf(res.text));
    // the control id names the same prediction: the outcome is already there (a replay), and a different one conflicts
    const byMessage = await outcome({ hl7: { controlId, ...sender } }, true, observedAt);
    assert.equal(byMessage.status, 200, byMessage.text);
    assert.equal((await outcome({ hl7: { controlId, ...sender } }, false, observedAt)).status, 409);
  });

  test('an hl7 reference that is not one: 400', async () => {
    for (const hl7 of [{}, { controlId: '' }, { controlId: 'A\rPID|' }, { controlId: 'x', mrn: '1' }, 'CNTRL-3456']) {
      const res = await outcome({ hl7 });
      assert.equal(res.status, 400, `${JSON.stringify(hl7)}: ${res.text}`);
    }
  });
});
