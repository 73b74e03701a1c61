/**
 * The batch tier through the API, on real Redis, BullMQ, worker threads and onnxruntime: on-demand runs in the FHIR
 * Bulk Data pattern (202 + Content-Location, X-Progress, the completion manifest, output and error files), bad rows in
 * the error file, CSV and FHIR NDJSON (the Synthea vital signs, grouped per patient), cancelling, metrics, what logs
 * and /metrics must not show, and the bad-input table of the batch endpoints.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readFhir } from '../src/batch/readers.ts';
import { LocalStorage } from '../src/batch/storage.ts';
import { outcomeCode } from '../src/fhir/operation-outcome.ts';
import { loadModels } from '../src/registry/load.ts';
import {
  buildGateway,
  captureLogs,
  deletePrefix,
  download,
  makeKeys,
  makePrefix,
  metricValue,
  news2Row,
  outcomeRowId,
  PROGRESS,
  queueIdle,
  removeDir,
  SYNTHEA_OBSERVATIONS,
  type TestGateway,
  tempDir,
  tempModels,
  waitFor,
  waitForRun,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('batch');
const idlePrefix = makePrefix('batch-idle');
const logs = captureLogs('debug');
const tag = randomBytes(4).toString('hex');
/** a value no log line or metric may ever show */
const SECRET = `SECRET-${tag}-value`;
const FHIR_AS_OF = '2020-03-03T10:00:00.000Z';
const LOOKBACK_HOURS = 48;

let modelsDir: string;
let dataDir: string;
let outsideDir: string;
/** runs the batch worker in this process */
let gw: TestGateway;
/** no workers: runs it accepts stay queued */
let idle: TestGateway;

// ------------------------------------------------------------------------------------------------------------------
// Inputs

const NEWS2_COLUMNS = ['respirationRate', 'spo2', 'onOxygen', 'systolicBP', 'pulse', 'consciousness', 'temperature'];

interface Expected {
  /** every row id the run must account for, and whether it scores */
  outcome: Map<string, 'ok' | 'bad'>;
  /** the features of the rows that score */
  rows: Map<string, Record<string, unknown>>;
}

/** NDJSON of valid rows with bad ones in between (out of range, wrong type, unknown field, missing, bad lines). */
function mixedNdjson(n: number): { text: string; expected: Expected } {
  const lines: string[] = [];
  const expected: Expected = { outcome: new Map(), rows: new Map() };
  for (let i = 0; i < n; i++) {
    const id = `pt-${tag}-${i}`;
    const row: Record<string, unknown> = { id, ...news2Row(i) };
    let ok = true;
    if (i === n / 2) lines.push(''); // blank lines are not rows
    switch (i % 100) {
      case 13:
        row.respirationRate = 200; // out of range
        ok = false;
        break;
      case 27:
        row.pulse = SECRET; // wrong type
        ok = false;
        break;
      case 41:
        row.foo = 1; // unknown field
        ok = false;
        break;
      case 55:
        delete row.temperature; // required, missing
        ok = false;
        break;
      case 69:
        lines.push(`{"id":"${id}","pulse":`); // not JSON: named by its line
        expected.outcome.set(`line-${lines.length}`, 'bad');
        continue;
      case 83:
        lines.push('[1,2,3]'); // not an object
        expected.outcome.set(`line-${lines.length}`, 'bad');
        continue;
    }
    lines.push(JSON.stringify(row));
    expected.outcome.set(id, ok ? 'ok' : 'bad');
    if (ok) {
      const { id: _, ...values } = row;
      expected.rows.set(id, values);
    }
  }
  return { text: `${lines.join('\n')}\n`, expected };
}

/** CSV with a header of id + features; booleans true/false; bad rows (cell count, range, quoting). */
function mixedCsv(n: number): { text: string; expected: Expected } {
  const lines = [`id,${NEWS2_COLUMNS.join(',')}`];
  const expected: Expected = { outcome: new Map(), rows: new Map() };
  for (let i = 0; i < n; i++) {
    const id = `csv-${tag}-${i}`;
    const values = news2Row(i + 7);
    const cells = [id, ...NEWS2_COLUMNS.map((c) => String(values[c]))];
    if (i === 10) lines.push('');
    if (i % 50 === 5) {
      lines.push(cells.slice(0, -1).join(',')); // a cell short
      expected.outcome.set(`line-${lines.length}`, 'bad');
      continue;
    }
    if (i % 50 === 17) {
      lines.push([id, ...cells.slice(1, -1), '"37"5'].join(',')); // malformed quoting
      expected.outcome.set(`line-${lines.length}`, 'bad');
      continue;
    }
    if (i % 50 === 29) {
      cells[5] = '999'; // systolicBP out of range
      lines.push(cells.join(','));
      expected.outcome.set(id, 'bad');
      continue;
    }
    lines.push(cells.join(','));
    expected.outcome.set(id, 'ok');
    expected.rows.set(id, values);
  }
  return { text: `${lines.join('\r\n')}\r\n`, expected };
}

/** The client key's own input area (batch inputs are named relative to it). */
const area = () => path.join(dataDir, 'clients', 'client');

/** The folder a run writes to (its id and a random part). */
async function runFolder(id: string): Promise<string> {
  const run = await gw.gateway.services.runs.get(id);
  assert.ok(run, `run ${id}`);
  return path.join(dataDir, run.dir);
}

async function writeInput(name: string, text: string): Promise<void> {
  const file = path.join(area(), 'inputs', name);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text);
}

const mixed = mixedNdjson(1200);
const csv = mixedCsv(200);

before(async () => {
  modelsDir = await tempModels({
    news2: (m) => {
      m.batch = { chunkSize: 64 };
    },
    // the FHIR model: deterioration, with defaults for the features Synthea does not carry as Observations
    deterioration: (m) => {
      for (const f of m.features) {
        const reason = 'a test of vital-sign grouping: Synthea carries neither';
        if (f.name === 'age') Object.assign(f, { fhir: { assume: { value: 65, reason } } });
        if (f.name === 'onOxygen') Object.assign(f, { fhir: { ...f.fhir, assume: { value: false, reason } } });
      }
      m.batch = { chunkSize: 2, lookbackHours: LOOKBACK_HOURS };
    },
    'note-triage': null,
  });
  dataDir = await tempDir('data');
  outsideDir = await tempDir('outside');
  await writeInput('mixed.ndjson', mixed.text);
  await writeInput('mixed.csv', csv.text);
  await mkdir(path.join(area(), 'inputs'), { recursive: true });
  await copyFile(SYNTHEA_OBSERVATIONS, path.join(area(), 'inputs', 'vitals.ndjson'));
  gw = await buildGateway({ prefix, keys, modelsDir, dataDir, workers: ['batch'], logger: logs.logger });
  idle = await buildGateway({ prefix: idlePrefix, keys, modelsDir, dataDir, workers: [], logger: logs.logger });
});

after(async () => {
  await gw?.close();
  await idle?.close();
  await deletePrefix(prefix);
  await deletePrefix(idlePrefix);
  await removeDir(modelsDir);
  await removeDir(dataDir);
  await removeDir(outsideDir);
});

const submit = (g: TestGateway, model: string, body: unknown, key = keys.client) =>
  g.call('POST', `/v1/models/${model}/batches`, key, body);

async function metrics(): Promise<string> {
  const res = await gw.call('GET', '/metrics', undefined);
  assert.equal(res.status, 200);
  return res.text;
}

const toPatient = (subject: string) => subject.replace('urn:uuid:', 'Patient/');

/** POST /predict in pieces the sync tier accepts; the predictions in order. */
async function predictAll(model: string, instances: Array<Record<string, unknown>>): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < instances.length; i += 50) {
    const res = await gw.call('POST', `/v1/models/${model}/predict`, keys.client, {
      instances: instances.slice(i, i + 50),
    });
    assert.equal(res.status, 200, res.text);
    out.push(...res.body.predictions);
  }
  return out;
}

/** Checks a completed run's output and error files against what was expected of its input. */
async function checkFiles(
  manifest: Record<string, unknown> & { output: Array<{ url: string }>; error: Array<{ url: string }> },
  expected: Expected,
  model: string,
): Promise<Array<Record<string, unknown>>> {
  const output = await download(gw, keys.client, manifest.output[0]?.url as string);
  const errors = manifest.error.length > 0 ? await download(gw, keys.client, manifest.error[0]?.url as string) : [];
  const seen = new Map<string, string>();
  for (const row of output) {
    if (row.resourceType === 'RiskAssessment') {
      const id = (row.subject as { reference: string }).reference;
      assert.ok(!seen.has(id), `row ${id} twice`);
      seen.set(id, 'ok');
      continue;
    }
    assert.deepEqual(Object.keys(row).sort(), ['id', 'model', 'prediction', 'version']);
    assert.equal(row.model, model);
    assert.equal(row.version, '1');
    assert.ok(!seen.has(row.id as string), `row ${row.id} twice`);
    seen.set(row.id as string, 'ok');
  }
  for (const outcome of errors) {
    const id = outcomeRowId(outcome);
    const issue = (outcome.issue as Array<Record<string, unknown>>)[0] as Record<string, unknown>;
    assert.equal(issue.severity, 'error');
    assert.ok(issue.code === 'invalid' || issue.code === 'incomplete', String(issue.code));
    assert.ok(!seen.has(id), `row ${id} twice`);
    seen.set(id, 'bad');
  }
  assert.deepEqual(
    [...seen.entries()].sort(([a], [b]) => a.localeCompare(b)),
    [...expected.outcome.entries()].sort(([a], [b]) => a.localeCompare(b)),
    'every input row once, in the output or the error file',
  );
  return output;
}

function checkManifestShape(
  body: Record<string, unknown>,
  id: string,
  request: string,
  scored: number,
  failed: number,
) {
  assert.equal(typeof body.transactionTime, 'string');
  assert.equal(new Date(body.transactionTime as string).toISOString(), body.transactionTime, 'ISO 8601 instant');
  assert.equal(body.request, request);
  assert.equal(body.requiresAccessToken, true);
  assert.deepEqual(body.output, [
    { type: 'Prediction', url: `http://localhost/v1/batches/${id}/files/output.ndjson`, count: scored },
  ]);
  assert.deepEqual(
    body.error,
    failed > 0
      ? [{ type: 'OperationOutcome', url: `http://localhost/v1/batches/${id}/files/errors.ndjson`, count: failed }]
      : [],
  );
  for (const f of [...(body.output as Array<{ url: string }>), ...(body.error as Array<{ url: string }>)]) {
    assert.equal(new URL(f.url).href, f.url, 'absolute URL');
  }
}

// ------------------------------------------------------------------------------------------------------------------

describe('an on-demand NDJSON run', () => {
  let runId: string;
  let final: Awaited<ReturnType<typeof waitForRun>>['final'];
  const before: Record<string, number> = {};

  test('POST → 202 + Content-Location; status 202 with X-Progress while it runs; 200 with the manifest', async () => {
    const m = await metrics();
    for (const outcome of ['scored', 'failed']) {
      before[outcome] = metricValue(m, 'triage_batch_rows_total', { model: 'news2', outcome }) ?? 0;
    }
    before.runs =
      metricValue(m, 'triage_batch_run_duration_seconds_count', { model: 'news2', outcome: 'completed' }) ?? 0;

    const res = await submit(gw, 'news2', { input: { path: 'inputs/mixed.ndjson', format: 'ndjson' } });
    assert.equal(res.status, 202, res.text);
    runId = res.body.id;
    assert.match(runId, /^[0-9a-f-]{36}$/);
    assert.equal(res.headers.get('content-location'), `http://localhost/v1/batches/${runId}`);
    assert.equal(res.body.state, 'queued');
    assert.deepEqual(res.body.input, { path: 'inputs/mixed.ndjson', format: 'ndjson' });

    const progress: string[] = [];
    const done = await waitForRun(gw, keys.client, runId, 60_000, (r) => progress.push(r.headers.get('x-progress')!));
    final = done.final;
    assert.equal(final.status, 200, final.text);
    assert.match(final.headers.get('content-type') ?? '', /^application\/json/);
    for (const p of progress) assert.match(p, PROGRESS);
    const scored = mixed.expected.rows.size;
    const failed = mixed.expected.outcome.size - scored;
    checkManifestShape(final.body, runId, 'http://localhost/v1/models/news2/batches', scored, failed);
    assert.equal(final.body.extension.rowsRead, mixed.expected.outcome.size);
    assert.ok(final.body.extension.chunks >= Math.ceil(mixed.expected.outcome.size / 64));

    // the manifest is also written beside the files, with the same counts
    const onDisk = JSON.parse(await readFile(path.join(await runFolder(runId), 'manifest.json'), 'utf8'));
    assert.equal(onDisk.output[0].count, scored);
    assert.equal(onDisk.error[0].count, failed);
  });

  test('every input row is once in the output or the error file; bad rows never fail the run', async () => {
    const output = await checkFiles(final.body, mixed.expected, 'news2');
    assert.equal(output.length, mixed.expected.rows.size);
  });

  test('error lines are OperationOutcomes naming the row and the field, never the value', async () => {
    const errors = await download(gw, keys.client, final.body.error[0].url);
    const byId = new Map(errors.map((o) => [outcomeRowId(o), o]));
    const issue = (id: string) => {
      const list = byId.get(id)?.issue as Array<Record<string, unknown>> | undefined;
      assert.ok(list?.[0], `an OperationOutcome for row ${id}`);
      return list[0];
    };
    assert.deepEqual(issue(`pt-${tag}-13`).expression, ['respirationRate']);
    assert.match(issue(`pt-${tag}-13`).diagnostics as string, /out of range/);
    assert.deepEqual(issue(`pt-${tag}-27`).expression, ['pulse']);
    assert.match(issue(`pt-${tag}-27`).diagnostics as string, /must be a number/);
    assert.deepEqual(issue(`pt-${tag}-41`).expression, ['foo']);
    assert.match(issue(`pt-${tag}-41`).diagnostics as string, /unknown feature/);
    assert.deepEqual(issue(`pt-${tag}-55`).expression, ['temperature']);
    assert.match(issue(`pt-${tag}-55`).diagnostics as string, /required/);
    const badJson = [...mixed.expected.outcome.keys()].find((k) => k.startsWith('line-')) as string;
    assert.match(issue(badJson).diagnostics as string, /not valid JSON/);
    const text = JSON.stringify(errors);
    assert.ok(!text.includes(SECRET), 'the error file does not echo values');
  });

  test('output rows score exactly what POST /predict gives for the same rows', async () => {
    const output = await download(gw, keys.client, final.body.output[0].url);
    const sample = output.filter((_, i) => i % 97 === 0).slice(0, 12);
    const predictions = await predictAll(
      'news2',
      sample.map((r) => mixed.expected.rows.get(r.id as string) as Record<string, unknown>),
    );
    sample.forEach((row, i) => {
      assert.deepEqual(row.prediction, predictions[i], `row ${row.id}`);
    });
    assert.ok(sample.some((r) => (r.prediction as { news2Total: number }).news2Total > 0));
  });

  test('metrics: rows scored and failed, run duration', async () => {
    const m = await metrics();
    const scored = metricValue(m, 'triage_batch_rows_total', { model: 'news2', outcome: 'scored' }) ?? 0;
    const failed = metricValue(m, 'triage_batch_rows_total', { model: 'news2', outcome: 'failed' }) ?? 0;
    assert.equal(scored - (before.scored ?? 0), mixed.expected.rows.size);
    assert.equal(failed - (before.failed ?? 0), mixed.expected.outcome.size - mixed.expected.rows.size);
    const runs = metricValue(m, 'triage_batch_run_duration_seconds_count', { model: 'news2', outcome: 'completed' });
    assert.equal((runs ?? 0) - (before.runs ?? 0), 1);
    // every tier visible: the run's queue wait, and the inference of its chunks on the batch tier
    assert.ok((metricValue(m, 'triage_job_queue_wait_seconds_count', { model: 'news2', tier: 'batch' }) ?? 0) >= 1);
    const chunks = metricValue(m, 'triage_inference_duration_seconds_count', { model: 'news2', tier: 'batch' });
    assert.ok((chunks ?? 0) >= 1, 'chunk scoring is observed as inference on the batch tier');
  });

  test('re-queueing a completed run does not score it again', async () => {
    const queue = gw.gateway.services.queues.batch.for('news2');
    const record = await gw.gateway.services.runs.get(runId);
    const output = await readFile(path.join(await runFolder(runId), 'output.ndjson'));
    await (await queue.getJob(`run-${runId}`))?.remove();
    const job = await queue.add('run', { runId }, { jobId: `run-${runId}` });
    await waitFor(async () => (await job.getState()) === 'completed', 'the re-queued job');
    assert.equal((await queue.getJob(`run-${runId}`))?.returnvalue, 'run completed');
    assert.deepEqual(await gw.gateway.services.runs.get(runId), record);
    assert.deepEqual(await readFile(path.join(await runFolder(runId), 'output.ndjson')), output);
  });

  test('the run is visible to its requester and admins only; its files too', async () => {
    assert.equal((await gw.call('GET', `/v1/batches/${runId}`, keys.admin)).status, 200);
    for (const url of [`/v1/batches/${runId}`, `/v1/batches/${runId}/files/output.ndjson`]) {
      const res = await gw.call('GET', url, keys.other);
      assert.equal(res.status, 404, url);
      assert.equal(outcomeCode(res.body), 'not_found');
    }
    assert.equal((await gw.call('DELETE', `/v1/batches/${runId}`, keys.other)).status, 404);
    const unknownFile = await gw.call('GET', `/v1/batches/${runId}/files/manifest.json`, keys.client);
    assert.equal(unknownFile.status, 404);
  });

  test('cancelling a completed run → 409', async () => {
    const res = await gw.call('DELETE', `/v1/batches/${runId}`, keys.client);
    assert.equal(res.status, 409, res.text);
    assert.equal(outcomeCode(res.body), 'invalid_state');
  });
});

describe('an on-demand CSV run', () => {
  test('a header of id + features, booleans true/false; bad rows in the error file', async () => {
    const res = await submit(gw, 'news2', { input: { path: 'inputs/mixed.csv', format: 'csv' } });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    const scored = csv.expected.rows.size;
    checkManifestShape(
      final.body,
      res.body.id,
      'http://localhost/v1/models/news2/batches',
      scored,
      csv.expected.outcome.size - scored,
    );
    const output = await checkFiles(final.body, csv.expected, 'news2');
    const sample = output.filter((_, i) => i % 23 === 0);
    const predictions = await predictAll(
      'news2',
      sample.map((r) => csv.expected.rows.get(r.id as string) as Record<string, unknown>),
    );
    sample.forEach((row, i) => {
      assert.deepEqual(row.prediction, predictions[i], `row ${row.id}`);
    });
  });
});

// ------------------------------------------------------------------------------------------------------------------

describe('FHIR NDJSON: the Synthea vital signs', () => {
  const asOf = Date.parse(FHIR_AS_OF);
  const from = asOf - LOOKBACK_HOURS * 3600_000;
  /** the temp deterioration model's LOINC codes (components included) */
  const codes: Record<string, string> = {
    '9279-1': 'respirationRate',
    '59408-5': 'spo2',
    '8480-6': 'systolicBP',
    '8867-4': 'pulse',
    '8310-5': 'temperature',
  };
  const integers = new Set(['respirationRate', 'spo2', 'systolicBP', 'pulse']);

  interface Reading {
    at: number;
    value: number;
  }

  /** Independently of the reader: per patient and feature, every reading in (asOf - lookback, asOf]. */
  async function scan(): Promise<Map<string, Map<string, Reading[]>>> {
    const out = new Map<string, Map<string, Reading[]>>();
    for (const line of (await readFile(SYNTHEA_OBSERVATIONS, 'utf8')).split('\n')) {
      if (!line.trim()) continue;
      const r = JSON.parse(line);
      const at = Date.parse(r.effectiveDateTime);
      if (!(at > from && at <= asOf)) continue;
      const parts = [{ code: r.code, valueQuantity: r.valueQuantity }, ...(r.component ?? [])];
      for (const part of parts) {
        const names = new Set<string>();
        for (const c of part.code?.coding ?? [])
          if (c.system === 'http://loinc.org' && codes[c.code]) names.add(codes[c.code] as string);
        for (const name of names) {
          if (typeof part.valueQuantity?.value !== 'number') continue;
          const patient = out.get(r.subject.reference) ?? new Map<string, Reading[]>();
          out.set(r.subject.reference, patient);
          patient.set(name, [...(patient.get(name) ?? []), { at, value: part.valueQuantity.value }]);
        }
      }
    }
    return out;
  }

  /** The candidate values of the latest reading (several when two readings share the latest time). */
  function latest(readings: Reading[], name: string): number[] {
    const top = Math.max(...readings.map((r) => r.at));
    const values = readings
      .filter((r) => r.at === top)
      .map((r) => (integers.has(name) ? Math.round(r.value) : r.value));
    return [...new Set(values)];
  }

  test('one heart rate and one systolic BP, computed here from the raw file: the reader agrees', async () => {
    const patient = 'urn:uuid:a8376487-72d8-ac29-a654-91f3622cc7a4';
    const lines = (await readFile(SYNTHEA_OBSERVATIONS, 'utf8')).split('\n').filter((l) => l.trim());
    const heartRates = lines
      .map((l) => JSON.parse(l))
      .filter(
        (r) => r.subject.reference === patient && r.code.coding.some((c: { code: string }) => c.code === '8867-4'),
      )
      .map((r) => ({ at: Date.parse(r.effectiveDateTime), value: r.valueQuantity.value as number }));
    const inWindow = heartRates.filter((r) => r.at > from && r.at <= asOf).sort((a, b) => b.at - a.at);
    const overallLatest = [...heartRates].sort((a, b) => b.at - a.at)[0];
    assert.ok(inWindow.length >= 2, 'the patient has several heart rates in the window');
    assert.ok(overallLatest && overallLatest.at > asOf, 'and a later one, outside it');
    const panels = lines
      .map((l) => JSON.parse(l))
      .filter(
        (r) => r.subject.reference === patient && r.code.coding.some((c: { code: string }) => c.code === '85354-9'),
      )
      .filter((r) => Date.parse(r.effectiveDateTime) > from && Date.parse(r.effectiveDateTime) <= asOf)
      .sort((a, b) => Date.parse(b.effectiveDateTime) - Date.parse(a.effectiveDateTime));
    const systolic = panels[0].component.find((c: { code: { coding: Array<{ code: string }> } }) =>
      c.code.coding.some((x) => x.code === '8480-6'),
    ).valueQuantity.value as number;

    const [model] = (await loadModels(modelsDir, 5000)).filter((m) => m.manifest.name === 'deterioration');
    const storage = new LocalStorage(dataDir);
    const rows = [];
    for await (const row of readFhir(
      [{ name: 'vitals.ndjson', stream: await storage.openRead('clients/client/inputs/vitals.ndjson') }],
      model?.manifest.features ?? [],
      { asOf, lookbackHours: LOOKBACK_HOURS },
    )) {
      rows.push(row);
    }
    const row = rows.find((r) => r.id === patient.replace('urn:uuid:', 'Patient/'));
    assert.equal(row?.values?.pulse, Math.round(inWindow[0]?.value as number));
    assert.notEqual(row?.values?.pulse, Math.round(overallLatest.value));
    assert.equal(row?.values?.systolicBP, Math.round(systolic));
  });

  test('a run with asOf: one row per patient (subject reference), sorted, scored on the latest in-window values', async () => {
    const res = await submit(gw, 'deterioration', {
      input: { path: 'inputs/vitals.ndjson', format: 'fhir-ndjson' },
      asOf: FHIR_AS_OF,
    });
    assert.equal(res.status, 202, res.text);
    const { final } = await waitForRun(gw, keys.client, res.body.id);
    assert.equal(final.status, 200, final.text);
    assert.equal(final.body.extension.asOf, FHIR_AS_OF);

    const readings = await scan();
    const required = ['respirationRate', 'spo2', 'systolicBP', 'pulse', 'temperature'];
    const complete = [...readings.entries()].filter(([, f]) => required.every((n) => f.has(n)));
    assert.ok(complete.length >= 4, `several patients have every vital sign in the window (${complete.length})`);
    const expected: Expected = { outcome: new Map(), rows: new Map() };
    // every patient of the file has a row: scored, or an error saying what is missing (nothing in the window too)
    const subjects = (await readFile(SYNTHEA_OBSERVATIONS, 'utf8'))
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l).subject.reference as string);
    for (const patient of new Set(subjects))
      expected.outcome.set(toPatient(patient), complete.some(([p]) => p === patient) ? 'ok' : 'bad');
    const output = await checkFiles(final.body, expected, 'deterioration');
    const ids = output.map((r) => (r.subject as { reference: string }).reference);
    assert.deepEqual(ids, [...ids].sort(), 'sorted by patient');
    assert.ok(
      ids.every((id) => id.startsWith('Patient/')),
      'rows are named by the normalised subject reference',
    );

    // each patient's score is /predict's on the latest in-window values (any of them, where two share the time)
    for (const [patient, f] of complete) {
      let candidates: Array<Record<string, unknown>> = [{ age: 65, onOxygen: false }];
      for (const name of required) {
        candidates = candidates.flatMap((c) => latest(f.get(name) ?? [], name).map((v) => ({ ...c, [name]: v })));
      }
      const predictions = (await predictAll('deterioration', candidates)) as Array<{ deteriorationRisk: number }>;
      const row = output.find((r) => (r.subject as { reference: string }).reference === toPatient(patient));
      const risk = (row?.prediction as Array<{ probabilityDecimal: number }> | undefined)?.[0]?.probabilityDecimal;
      assert.ok(
        predictions.some((p) => p.deteriorationRisk === risk),
        `${patient}: ${risk} is one of ${JSON.stringify(predictions)}`,
      );
    }
  });
});

// ------------------------------------------------------------------------------------------------------------------

describe('cancelling', () => {
  test('a queued run: DELETE → 202 cancelled, then 404 (Bulk Data: deleted); its job is gone', async () => {
    const res = await submit(idle, 'news2', { input: { path: 'inputs/mixed.ndjson', format: 'ndjson' } });
    assert.equal(res.status, 202, res.text);
    const id = res.body.id;
    // no worker here: the run stays queued, so this 202 is certain
    const status = await idle.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(status.status, 202);
    assert.equal(status.headers.get('x-progress'), 'queued: 0 rows read, 0 scored, 0 failed');
    assert.match(status.headers.get('retry-after') ?? '', /^\d+$/);
    assert.ok(await idle.gateway.services.queues.batch.getJob(`run-${id}`));

    const cancel = await idle.call('DELETE', `/v1/batches/${id}`, keys.client);
    assert.equal(cancel.status, 202, cancel.text);
    assert.equal(cancel.body.state, 'cancelled');
    const gone = await idle.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(gone.status, 404);
    assert.equal(outcomeCode(gone.body), 'not_found');
    assert.equal(await idle.gateway.services.queues.batch.getJob(`run-${id}`), undefined);
    const again = await idle.call('DELETE', `/v1/batches/${id}`, keys.client);
    assert.equal(again.status, 409);
    assert.equal(outcomeCode(again.body), 'invalid_state');
  });

  test('a running run stops at its next chunk', async () => {
    const n = 60_000;
    let text = '';
    for (let i = 0; i < n; i++) text += `${JSON.stringify({ id: `long-${i}`, ...news2Row(i) })}\n`;
    await writeInput('long.ndjson', text);
    const res = await submit(gw, 'news2', { input: { path: 'inputs/long.ndjson', format: 'ndjson' } });
    assert.equal(res.status, 202, res.text);
    const id = res.body.id;
    await waitFor(
      async () => ((await gw.gateway.services.runs.get(id))?.rowsDone ?? 0) > 0,
      'the run to commit a chunk',
    );
    const running = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(running.status, 202, running.text);
    assert.match(running.headers.get('x-progress') ?? '', /^running: [1-9]\d* rows read, \d+ scored, 0 failed$/);
    assert.match(running.headers.get('retry-after') ?? '', /^\d+$/);
    const cancel = await gw.call('DELETE', `/v1/batches/${id}`, keys.client);
    assert.equal(cancel.status, 202, cancel.text);
    await waitFor(() => queueIdle(gw.gateway.services.queues.batch), 'the worker to let go of the run');
    const run = await gw.gateway.services.runs.get(id);
    assert.equal(run?.state, 'cancelled');
    assert.ok((run?.rowsDone ?? n) < n, `stopped early (${run?.rowsDone} of ${n})`);
    const lines = (await readFile(path.join(await runFolder(id), 'output.ndjson'), 'utf8')).split('\n');
    assert.equal(lines.length - 1, run?.scored, 'the output holds exactly the committed rows');
    assert.equal((await gw.call('GET', `/v1/batches/${id}`, keys.client)).status, 404);
    assert.equal((await gw.call('GET', `/v1/batches/${id}/files/output.ndjson`, keys.client)).status, 404);
  });
});

describe('a failed run', () => {
  test('its status is an OperationOutcome naming the failure', async () => {
    const id = randomUUID();
    await gw.gateway.services.runs.create({
      id,
      model: 'retired-model',
      version: '1',
      requestedBy: 'api:client',
      input: { path: 'clients/client/inputs/mixed.ndjson', format: 'ndjson' },
      asOf: Date.now(),
      state: 'queued',
      createdAt: Date.now(),
    });
    // a run recorded before shards (its id names none: read under the global tag), queued on a served shard
    const job = await gw.gateway.services.queues.batch.for('news2').add('run', { runId: id }, { jobId: `run-${id}` });
    await waitFor(async () => (await job.getState()) === 'completed', 'the worker to take the run');
    const res = await gw.call('GET', `/v1/batches/${id}`, keys.client);
    assert.equal(res.status, 500, res.text);
    assert.match(res.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    assert.equal(outcomeCode(res.body), 'run_failed');
    assert.equal(res.body.issue[0].diagnostics, 'the model is no longer served');
    assert.equal(res.body.issue[0].severity, 'fatal');
    assert.equal((await gw.call('GET', `/v1/batches/${id}/files/output.ndjson`, keys.client)).status, 404);
  });
});

// ------------------------------------------------------------------------------------------------------------------

describe('bad input: every refusal is a 4xx OperationOutcome with its code', () => {
  let fifoMade = false;

  before(async () => {
    const inputs = path.join(area(), 'inputs');
    await writeInput('ok.ndjson', `${JSON.stringify({ id: 'a', ...news2Row(1) })}\n`);
    await writeInput('empty.ndjson', '');
    await writeInput('blank.ndjson', '\n  \n\n');
    await writeInput('table.csv', `id,${NEWS2_COLUMNS.join(',')}\nx,16,97,false,120,70,alert,37\n`);
    await writeInput('plain.ndjson', '{"id":"x","pulse":70}\n');
    await mkdir(path.join(inputs, 'folder'), { recursive: true });
    await writeFile(path.join(outsideDir, 'secret.ndjson'), '{"id":"outside"}\n');
    await symlink(path.join(outsideDir, 'secret.ndjson'), path.join(inputs, 'escape.ndjson'));
    await symlink(path.join(outsideDir), path.join(inputs, 'escape-dir'));
    await writeInput('locked.ndjson', `${JSON.stringify({ id: 'b', ...news2Row(2) })}\n`);
    await chmod(path.join(inputs, 'locked.ndjson'), 0o000);
    try {
      execFileSync('mkfifo', [path.join(inputs, 'pipe.ndjson')]);
      fifoMade = (await stat(path.join(inputs, 'pipe.ndjson'))).isFIFO();
    } catch {
      fifoMade = false;
    }
  });

  const input = (p: string, format = 'ndjson') => ({ input: { path: p, format } });

  const cases: Array<{
    name: string;
    model?: string;
    body: unknown;
    contentType?: string;
    key?: string;
    status: number;
    code: string;
  }> = [
    {
      name: 'unknown model',
      model: 'no-such-model',
      body: input('inputs/ok.ndjson'),
      status: 404,
      code: 'model_not_found',
    },
    { name: 'bad JSON', body: '{"input": {', status: 400, code: 'malformed_json' },
    {
      name: 'wrong content type',
      body: 'input=x',
      contentType: 'text/plain',
      status: 415,
      code: 'unsupported_media_type',
    },
    { name: 'no key', body: input('inputs/ok.ndjson'), key: '', status: 401, code: 'unauthenticated' },
    { name: 'a reviewer key', body: input('inputs/ok.ndjson'), key: 'reviewer', status: 403, code: 'forbidden' },
    {
      name: 'a key not allowed this model',
      body: input('inputs/ok.ndjson'),
      key: 'det',
      status: 403,
      code: 'forbidden',
    },
    { name: 'body not an object', body: '[1]', status: 400, code: 'invalid_request' },
    { name: 'missing input', body: {}, status: 400, code: 'invalid_request' },
    { name: 'input a string', body: { input: 'inputs/ok.ndjson' }, status: 400, code: 'invalid_request' },
    { name: 'input an array', body: { input: ['inputs/ok.ndjson'] }, status: 400, code: 'invalid_request' },
    { name: 'path not a string', body: { input: { path: 7, format: 'ndjson' } }, status: 400, code: 'invalid_request' },
    { name: 'empty path', body: input(''), status: 400, code: 'invalid_request' },
    { name: 'unknown format', body: input('inputs/ok.ndjson', 'parquet'), status: 400, code: 'invalid_request' },
    { name: 'missing format', body: { input: { path: 'inputs/ok.ndjson' } }, status: 400, code: 'invalid_request' },
    { name: '../etc/passwd', body: input('../etc/passwd'), status: 404, code: 'not_found' },
    { name: 'inputs/../../x', body: input('inputs/../../x.ndjson'), status: 404, code: 'not_found' },
    { name: '/etc/passwd', body: input('/etc/passwd'), status: 404, code: 'not_found' },
    { name: 'a NUL byte', body: input('inputs/ok.ndjson\u0000.csv'), status: 404, code: 'not_found' },
    { name: 'a symlink out', body: input('inputs/escape.ndjson'), status: 404, code: 'not_found' },
    {
      name: 'a symlinked dir out',
      body: input('inputs/escape-dir/secret.ndjson'),
      status: 404,
      code: 'not_found',
    },
    { name: 'a path that does not exist', body: input('inputs/nope.ndjson'), status: 404, code: 'not_found' },
    { name: 'a directory', body: input('inputs/folder'), status: 400, code: 'invalid_input_file' },
    { name: 'its own data area itself', body: input('.'), status: 400, code: 'invalid_input_file' },
    { name: 'another client’s area', body: input('../other-client/inputs/ok.ndjson'), status: 404, code: 'not_found' },
    { name: 'a shared area not granted', body: input('shared/outreach/ok.ndjson'), status: 404, code: 'not_found' },
    { name: 'CSV declared ndjson', body: input('inputs/table.csv'), status: 400, code: 'invalid_input_file' },
    { name: 'NDJSON declared csv', body: input('inputs/ok.ndjson', 'csv'), status: 400, code: 'invalid_input_file' },
    {
      name: 'non-FHIR JSON declared fhir-ndjson',
      body: input('inputs/plain.ndjson', 'fhir-ndjson'),
      status: 400,
      code: 'invalid_input_file',
    },
    {
      name: 'CSV declared fhir-ndjson',
      body: input('inputs/table.csv', 'fhir-ndjson'),
      status: 400,
      code: 'invalid_input_file',
    },
    { name: 'an empty file', body: input('inputs/empty.ndjson'), status: 400, code: 'invalid_input_file' },
    { name: 'only blank lines', body: input('inputs/blank.ndjson'), status: 400, code: 'invalid_input_file' },
    {
      name: 'asOf not ISO',
      body: { ...input('inputs/ok.ndjson'), asOf: '03/03/2020' },
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'asOf a date only',
      body: { ...input('inputs/ok.ndjson'), asOf: '2020-03-03' },
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'asOf impossible',
      body: { ...input('inputs/ok.ndjson'), asOf: '2020-13-45T00:00:00Z' },
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'asOf a number',
      body: { ...input('inputs/ok.ndjson'), asOf: 1583229600000 },
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'unknown top-level field',
      body: { ...input('inputs/ok.ndjson'), output: 'x' },
      status: 400,
      code: 'invalid_request',
    },
    {
      name: 'a document model',
      model: 'note-triage',
      body: input('inputs/ok.ndjson'),
      status: 409,
      code: 'wrong_tier',
    },
  ];

  const keyFor = (k: string | undefined) =>
    k === undefined ? keys.client : k === '' ? undefined : k === 'reviewer' ? keys.reviewer : keys.deteriorationOnly;

  for (const c of cases) {
    test(`POST batches: ${c.name} → ${c.status} ${c.code}`, async () => {
      const res = await idle.call(
        'POST',
        `/v1/models/${c.model ?? 'news2'}/batches`,
        keyFor(c.key),
        c.body,
        c.contentType ? { 'content-type': c.contentType } : {},
      );
      assert.equal(res.status, c.status, res.text);
      // Bulk Data kick-off errors are OperationOutcomes; Triage's stable code is in issue[0].details
      assert.match(res.headers.get('content-type') ?? '', /^application\/fhir\+json/);
      assert.equal(outcomeCode(res.body), c.code, res.text);
      assert.ok(!res.text.includes(outsideDir), 'the problem does not reveal paths outside the data directory');
    });
  }

  test('an unreadable input: a FIFO is refused (root reads chmod-000 files, so that is accepted as readable)', async () => {
    assert.ok(fifoMade, 'mkfifo made a FIFO in the data directory');
    const fifo = await idle.call('POST', '/v1/models/news2/batches', keys.client, input('inputs/pipe.ndjson'));
    assert.equal(fifo.status, 400, fifo.text);
    assert.equal(outcomeCode(fifo.body), 'invalid_input_file');
    assert.match(fifo.body.issue[0].diagnostics, /cannot be read/);

    const locked = await idle.call('POST', '/v1/models/news2/batches', keys.client, input('inputs/locked.ndjson'));
    if (process.getuid?.() === 0) {
      // root bypasses file permissions: the file is readable, so the run is accepted (and cancelled here)
      assert.equal(locked.status, 202, locked.text);
      assert.equal((await idle.call('DELETE', `/v1/batches/${locked.body.id}`, keys.client)).status, 202);
    } else {
      assert.equal(locked.status, 400, locked.text);
      assert.equal(outcomeCode(locked.body), 'invalid_input_file');
    }
  });

  test('status of unknown, malformed and other clients’ runs → 404; files of an unfinished run → 404', async () => {
    for (const id of ['00000000-0000-0000-0000-000000000000', 'nope!', 'x'.repeat(200)]) {
      const res = await idle.call('GET', `/v1/batches/${encodeURIComponent(id)}`, keys.client);
      assert.equal(res.status, 404, id);
      assert.equal(outcomeCode(res.body), 'not_found');
      assert.equal((await idle.call('DELETE', `/v1/batches/${encodeURIComponent(id)}`, keys.client)).status, 404);
    }
    const res = await idle.call('POST', '/v1/models/news2/batches', keys.client, input('inputs/ok.ndjson'));
    assert.equal(res.status, 202, res.text);
    const id = res.body.id;
    for (const url of [`/v1/batches/${id}`, `/v1/batches/${id}/files/output.ndjson`]) {
      const other = await idle.call('GET', url, keys.other);
      assert.equal(other.status, 404, url);
      assert.equal(outcomeCode(other.body), 'not_found');
    }
    for (const file of ['output.ndjson', 'errors.ndjson']) {
      const unfinished = await idle.call('GET', `/v1/batches/${id}/files/${file}`, keys.client);
      assert.equal(unfinished.status, 404);
      assert.equal(outcomeCode(unfinished.body), 'not_found');
    }
    // an admin sees any run
    assert.equal((await idle.call('GET', `/v1/batches/${id}`, keys.admin)).status, 202);
  });
});

// ------------------------------------------------------------------------------------------------------------------

describe('what must not show', () => {
  test('/metrics and the logs carry no row ids or values', async () => {
    const m = await metrics();
    const logText = logs.lines.join('\n');
    assert.ok(logs.lines.length > 0);
    assert.ok(logText.includes('batch run completed'), 'the worker logs run outcomes');
    for (const text of [m, logText]) {
      assert.ok(!text.includes(SECRET));
      assert.ok(!text.includes(`pt-${tag}`), 'no NDJSON row id');
      assert.ok(!text.includes(`csv-${tag}`), 'no CSV row id');
      assert.ok(!text.includes('urn:uuid:'), 'no patient reference');
      assert.ok(!text.includes('long-1'), 'no row id of the long run');
    }
  });
});
