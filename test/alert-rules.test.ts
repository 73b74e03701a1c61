/**
 * The PrometheusRule in k8s/monitoring: its rule groups pass `promtool check rules`, and its unit tests (drift after
 * shifted traffic fires the drift alert; too few rows do not; overrides; the share above the threshold shifting; a
 * suspension; a shadow shedding most of its mirrors; sync error and latency budget burn) pass `promtool test rules`.
 * promtool comes with Debian's `prometheus` package (.ci/run installs it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';

const run = promisify(execFile);
const DIR = fileURLToPath(new URL('../k8s/monitoring/', import.meta.url));

describe('alert rules (promtool)', () => {
  let work: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'triage-rules-'));
    const rule = YAML.parse(await readFile(path.join(DIR, 'triage-rules.yaml'), 'utf8'));
    assert.equal(rule.kind, 'PrometheusRule');
    await writeFile(path.join(work, 'rules.yml'), YAML.stringify(rule.spec));
    await copyFile(path.join(DIR, 'triage-rules.test.yaml'), path.join(work, 'triage-rules.test.yaml'));
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const promtool = async (...args: string[]) => {
    try {
      return await run('promtool', args, { cwd: work });
    } catch (err) {
      const e = err as { code?: string; stdout?: string; stderr?: string };
      if (e.code === 'ENOENT') assert.fail('promtool is missing: apt-get install prometheus (as .ci/run does)');
      assert.fail(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
  };

  test('promtool check rules accepts every rule', async () => {
    const { stdout } = await promtool('check', 'rules', 'rules.yml');
    assert.match(stdout, /SUCCESS: 11 rules found/);
  });

  test('promtool test rules: the alerts fire when they should, and only then', async () => {
    const { stdout } = await promtool('test', 'rules', 'triage-rules.test.yaml');
    assert.match(stdout, /SUCCESS/);
  });
});
