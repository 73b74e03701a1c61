/**
 * The `triage` CLI as a script uses it: a real process against a real gateway on a real socket, exit codes per
 * outcome, --json answers, and the offline commands (a model folder validated, a tampered artifact refused; a new key
 * whose entry the gateway accepts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ApiKeyStore } from '../src/platform/auth.ts';
import { type DeskGateway, deskGateway, submitHeld } from './desk-support.ts';
import { deletePrefix, makeKeys, makePrefix, NOTES, removeDir, tempModels } from './support/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const keys = makeKeys();
const prefix = makePrefix('cli');
let gw: DeskGateway;

before(async () => {
  gw = await deskGateway(prefix, keys);
});
after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function triage(args: string[], key?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), ...args],
      { cwd: ROOT, env: { ...process.env, TRIAGE_URL: gw.url, ...(key ? { TRIAGE_KEY: key } : { TRIAGE_KEY: '' }) } },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('reviews', () => {
  test('list and decide; a second decision exits 5 (conflict), a wrong key 3, an unknown hold 4, a bad amendment 6', async () => {
    const id = await submitHeld(gw, keys.client, { text: NOTES.routine });
    const list = await triage(['reviews', 'list', '--json', '--model', 'note-triage'], keys.reviewer);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(JSON.parse(list.stdout).items.some((r: { id: string }) => r.id === id));

    const bad = await triage(
      ['reviews', 'decide', id, 'amend', '--reason', 'r', '--output', '{"category":"no-action","x":1}'],
      keys.reviewer,
    );
    assert.equal(bad.code, 6, bad.stderr);
    assert.match(bad.stderr, /400 invalid_request: output: "x" not in this model's output/);

    const ok = await triage(['reviews', 'decide', id, 'approve', '--reason', 'agree'], keys.reviewer);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), `${id}: released`);

    const late = await triage(['--json', 'reviews', 'decide', id, 'reject', '--reason', 'late'], keys.reviewer2);
    assert.equal(late.code, 5, late.stderr);
    assert.equal(JSON.parse(late.stdout).code, 'already_decided');

    assert.equal((await triage(['reviews', 'list'], 'trg_wrong')).code, 3);
    assert.equal((await triage(['reviews', 'show', '00000000-0000-4000-8000-000000000000'], keys.reviewer)).code, 4);
    assert.equal((await triage(['reviews', 'decide', id], keys.reviewer)).code, 2, 'usage: no reason');
  });
});

describe('admin', () => {
  test('routing show, a refused canary, dead letters', async () => {
    const show = await triage(['--json', 'routing', 'show', 'note-triage'], keys.admin);
    assert.equal(show.code, 0, show.stderr);
    assert.equal(JSON.parse(show.stdout).routing.primary, '1');
    const canary = await triage(
      ['routing', 'canary', 'note-triage', '9', '10', '--reason', 'no such version'],
      keys.admin,
    );
    assert.notEqual(canary.code, 0);
    assert.ok([4, 6].includes(canary.code), `${canary.code} ${canary.stderr}`);
    const dead = await triage(['--json', 'dead-letters', 'list'], keys.admin);
    assert.equal(dead.code, 0, dead.stderr);
    assert.deepEqual(JSON.parse(dead.stdout).items, []);
    assert.equal((await triage(['dead-letters', 'list'], keys.reviewer)).code, 3, 'a reviewer is not an admin');
  });
});

describe('offline', () => {
  test('models validate: a bundled model passes; a tampered artifact hash fails with exit 1', async () => {
    const good = await triage(['models', 'validate', path.join(ROOT, 'models/note-triage')]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /note-triage: valid \(async/);
    const dir = await tempModels({
      'note-triage': (m) => {
        m.versions[0].runtime.sha256 = '0'.repeat(64);
      },
    });
    try {
      const bad = await triage(['--json', 'models', 'validate', path.join(dir, 'note-triage')]);
      assert.equal(bad.code, 1);
      assert.equal(JSON.parse(bad.stdout).valid, false);
      assert.match(bad.stderr, /sha256/);
    } finally {
      await removeDir(dir);
    }
  });

  test('keys new: the key is printed once and its entry (a hash) is accepted by the gateway’s key store', async () => {
    const res = await triage([
      '--json',
      'keys',
      'new',
      'ward-7-app',
      '--role',
      'client',
      '--models',
      'news2,note-triage',
    ]);
    assert.equal(res.code, 0, res.stderr);
    const { key, entry } = JSON.parse(res.stdout);
    assert.equal(JSON.stringify(entry).includes(key), false);
    const principal = new ApiKeyStore([entry]).authenticate(key);
    assert.equal(principal?.id, 'ward-7-app');
    assert.deepEqual([...(principal?.models ?? [])], ['news2', 'note-triage']);
    assert.equal((await triage(['keys', 'new', 'x', '--role', 'root'])).code, 2);
  });
});
