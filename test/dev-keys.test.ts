/**
 * Issue 10, item 10: the development keys reach a terminal or a file only the user can read, never a log stream.
 * One test runs the real `src/server.ts` with stderr piped (as a log collector would), the others the two branches.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { announceDevelopmentKeys } from '../src/platform/dev-keys.ts';
import { captureLogs, deletePrefix, MODELS_DIR, makePrefix, REDIS_URL } from './support/index.ts';

const REPO = fileURLToPath(new URL('../', import.meta.url));
let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'triage-devkeys-test-'));
});
after(() => rm(dir, { recursive: true, force: true }));

describe('development keys banner', () => {
  test('a terminal gets the banner and no file is written', async () => {
    let written = '';
    const { logger, lines } = captureLogs('debug');
    const out = await announceDevelopmentKeys(
      'trg_client_x\n',
      { stream: { isTTY: true, write: (t: string) => (written += t) }, dir },
      logger,
    );
    assert.deepEqual(out, { shown: 'terminal' });
    assert.equal(written, 'trg_client_x\n');
    assert.equal(lines.length, 0);
  });

  test('anything else: a 0600 file in a 0700 directory, and the log names the file, not the keys', async () => {
    let written = '';
    const { logger, lines } = captureLogs('debug');
    const out = await announceDevelopmentKeys(
      'trg_client_secret\n',
      { stream: { isTTY: false, write: (t: string) => (written += t) }, dir },
      logger,
    );
    assert.equal(out.shown, 'file');
    const file = (out as { file: string }).file;
    assert.equal(written, '');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
    assert.equal(await readFile(file, 'utf8'), 'trg_client_secret\n');
    assert.equal(lines.length, 1);
    assert.equal(JSON.parse(lines[0] as string).file, file);
    assert.ok(!lines.join('').includes('trg_client_secret'));
  });

  test('the real server with stderr piped: no key on stdout or stderr, the file holds them', async () => {
    const prefix = makePrefix('devkeys');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        TMPDIR: dir,
        TRIAGE_API_KEYS: undefined,
        TRIAGE_ENV: 'development',
        TRIAGE_PORT: '0',
        TRIAGE_REDIS_URL: REDIS_URL,
        TRIAGE_REDIS_PREFIX: prefix,
        TRIAGE_MODELS_DIR: MODELS_DIR,
        TRIAGE_WORKERS: 'none',
        TRIAGE_WARMUP_RUNS: '1',
        TRIAGE_DATA_DIR: dir,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = once(child, 'exit');
    try {
      let file: string | undefined;
      for await (const line of createInterface({ input: child.stdout })) {
        stdout += `${line}\n`;
        const entry = JSON.parse(line) as { file?: string; msg?: string };
        if (entry.file) file = entry.file;
        if (entry.msg === 'listening') break;
      }
      assert.ok(file, `no keys file named in the log:\n${stdout}\n${stderr}`);
      const keys = await readFile(file, 'utf8');
      assert.match(keys, /client\s+trg_client_/);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      for (const secret of keys.match(/(trg_\w+_[\w-]+|whsec_\S+)/g) ?? []) {
        assert.ok(!stdout.includes(secret) && !stderr.includes(secret), 'a development key reached the output');
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
      await deletePrefix(prefix);
    }
  });
});
