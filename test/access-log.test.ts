/**
 * The access log's line is built by hand (src/platform/logger.ts, accessLogWriter) rather than by pino's generic
 * serialisation: it must stay the line pino writes for the same fields (valid JSON, one a line, the same field names in
 * the same order), escape what it is given, and honour the logger's level. stdout is written in blocks: what is
 * buffered still reaches it on a timer and on exit.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type AccessLogLabels, accessLogWriter, createLogger, isoNow } from '../src/platform/logger.ts';

const LABELS: AccessLogLabels = {
  route: '/v1/models/:model/predict',
  method: 'POST',
  status: '200',
  model: 'news2',
  version: '1',
  tier: 'sync',
};

function capture(level: string) {
  const lines: string[] = [];
  const logger = createLogger(level, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

/** What pino itself writes for the same fields (the access log's line before it was built by hand). */
function pinoLine(
  level: 'info' | 'warn',
  requestId: string,
  principal: string | undefined,
  labels: AccessLogLabels,
  ms: number,
): string {
  const { logger, lines } = capture('info');
  logger.child({}, { redact: [] })[level]({ requestId, principal, ...labels, ms }, 'request');
  return lines[0] as string;
}

const withoutTime = (line: string) => line.replace(/"time":"[^"]*"/, '"time":"T"');

describe('access log line', () => {
  it('is the line pino writes for the same fields, at info and at warn, with and without a principal', () => {
    const { logger, lines } = capture('info');
    const write = accessLogWriter(logger);
    write('info', 'c0ffee00-0000-4000-8000-000000000001', 'client', LABELS, 1.234);
    write('warn', 'req-2', undefined, { ...LABELS, status: '500', model: '', version: '', tier: '' }, 12);
    assert.equal(lines.length, 2);
    assert.equal(
      withoutTime(lines[0] as string),
      withoutTime(pinoLine('info', 'c0ffee00-0000-4000-8000-000000000001', 'client', LABELS, 1.234)),
    );
    assert.equal(
      withoutTime(lines[1] as string),
      withoutTime(
        pinoLine('warn', 'req-2', undefined, { ...LABELS, status: '500', model: '', version: '', tier: '' }, 12),
      ),
    );
    const first = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.deepEqual(Object.keys(first), [
      'level',
      'time',
      'service',
      'requestId',
      'principal',
      'route',
      'method',
      'status',
      'model',
      'version',
      'tier',
      'ms',
      'msg',
    ]);
    assert.equal(first.level, 30);
    assert.equal(first.service, 'triage');
    assert.equal(first.ms, 1.234);
    assert.match(first.time as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(Math.abs(Date.parse(first.time as string) - Date.now()) < 60_000, 'the time is now');
    assert.equal(JSON.parse(lines[1] as string).level, 40);
    assert.ok(!('principal' in JSON.parse(lines[1] as string)), 'no principal: no field');
    for (const line of lines) assert.ok(line.endsWith('}\n') && !line.slice(0, -1).includes('\n'), 'one line each');
  });

  it('escapes what it is given as JSON does', () => {
    const odd = 'a"b\\c\nd\u0001e\u2028f\u00e9g\ud83d\ude00h\ud800';
    const { logger, lines } = capture('info');
    accessLogWriter(logger)('info', odd, odd, { ...LABELS, route: odd, model: odd }, Number.NaN);
    const entry = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.equal(entry.requestId, odd);
    assert.equal(entry.principal, odd);
    assert.equal(entry.route, odd);
    assert.equal(entry.model, odd);
    assert.equal(entry.ms, null);
    assert.ok(!(lines[0] as string).slice(0, -1).includes('\n'));
  });

  it('honours the logger level: warn keeps 5xx lines only, silent none, a level raised later too', () => {
    const warnOnly = capture('warn');
    const write = accessLogWriter(warnOnly.logger);
    write('info', 'r1', 'client', LABELS, 1);
    write('warn', 'r2', 'client', { ...LABELS, status: '502' }, 1);
    assert.deepEqual(
      warnOnly.lines.map((l) => JSON.parse(l).requestId),
      ['r2'],
    );
    const silent = capture('silent');
    accessLogWriter(silent.logger)('warn', 'r3', undefined, LABELS, 1);
    assert.equal(silent.lines.length, 0);
    const later = capture('info');
    const writeLater = accessLogWriter(later.logger);
    later.logger.level = 'error';
    writeLater('warn', 'r4', undefined, LABELS, 1);
    assert.equal(later.lines.length, 0);
  });

  it('formats the time once per millisecond, as toISOString does', () => {
    const a = isoNow();
    assert.equal(new Date(a).toISOString(), a);
    assert.ok(Math.abs(Date.parse(a) - Date.now()) < 60_000);
  });
});

describe('stdout in blocks', () => {
  const logger = fileURLToPath(new URL('../src/platform/logger.ts', import.meta.url));
  const repoRoot = path.resolve(path.dirname(logger), '..', '..');

  /** Runs a script with the gateway's stdout logger, passing each line of its stdout to `onLine` as it arrives. */
  function run(script: string, onLine: (line: string, child: ChildProcess) => void) {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { createLogger } from ${JSON.stringify(logger)};\n${script}`,
      ],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let rest = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() as string;
      for (const p of parts) onLine(p, child);
    });
    return new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  }

  it('a quiet process: its one line appears while it still runs (the periodic flush), not only at its exit', async () => {
    const seen: { line: string; running: boolean }[] = [];
    // one line, far below the block size, then idle for 60 s unless stopped
    const code = await run(
      `createLogger('info').info({ n: 1 }, 'quiet');
       const idle = setTimeout(() => {}, 60_000);
       process.on('SIGTERM', () => { clearTimeout(idle); process.exit(0); });`,
      (line, child) => {
        seen.push({ line, running: child.exitCode === null });
        child.kill('SIGTERM');
      },
    );
    assert.equal(code, 0);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.running, true, 'the line came only with the exit');
    assert.equal(JSON.parse(seen[0]?.line as string).msg, 'quiet');
  });

  it('a process that exits: every buffered line is written on the way out', async () => {
    const lines: string[] = [];
    const code = await run(
      `const log = createLogger('info');
       for (let i = 0; i < 1000; i++) log.info({ requestId: 'r' + i }, 'request');
       process.exit(3);`,
      (line) => lines.push(line),
    );
    assert.equal(code, 3);
    assert.equal(lines.length, 1000);
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).requestId),
      Array.from({ length: 1000 }, (_, i) => `r${i}`),
    );
  });
});
