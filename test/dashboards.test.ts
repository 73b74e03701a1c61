/**
 * The Grafana dashboards in k8s/monitoring/dashboards: valid JSON, every query valid PromQL (promtool checks them as
 * recording rules), and every metric they read is one a real gateway exports or a recording rule of
 * k8s/monitoring/triage-rules.yaml: a renamed metric breaks this test, not a dashboard nobody looks at.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { buildGateway, type TestGateway } from './support/index.ts';

const run = promisify(execFile);
const DIR = fileURLToPath(new URL('../k8s/monitoring/', import.meta.url));

interface Panel {
  title: string;
  targets: Array<{ expr: string }>;
}

describe('Grafana dashboards', () => {
  let app: TestGateway;
  let dashboards: Array<{ file: string; panels: Panel[] }>;

  before(async () => {
    app = await buildGateway();
    const files = (await readdir(path.join(DIR, 'dashboards'))).filter((f) => f.endsWith('.json'));
    dashboards = await Promise.all(
      files.map(async (file) => ({
        file,
        panels: JSON.parse(await readFile(path.join(DIR, 'dashboards', file), 'utf8')).panels as Panel[],
      })),
    );
    assert.ok(dashboards.length > 0);
  });

  after(async () => {
    await app?.close();
  });

  const exprs = () =>
    dashboards.flatMap((d) =>
      d.panels.flatMap((p) => p.targets.map((t) => ({ where: `${d.file}: ${p.title}`, expr: t.expr }))),
    );

  test('every metric a panel reads is exported by the gateway or recorded by the rules', async () => {
    const res = await app.app.request('/metrics');
    const exported = new Set([...(await res.text()).matchAll(/^# HELP (\S+)/gm)].map((m) => m[1]));
    const rules = YAML.parse(await readFile(path.join(DIR, 'triage-rules.yaml'), 'utf8'));
    const recorded = new Set(
      rules.spec.groups.flatMap((g: { rules: Array<{ record?: string }> }) =>
        g.rules.map((r) => r.record).filter(Boolean),
      ),
    );
    for (const { where, expr } of exprs()) {
      for (const [name] of expr.matchAll(/\btriage[_:][A-Za-z0-9_:]+/g)) {
        const base = name.replace(/_(bucket|count|sum)$/, '');
        assert.ok(exported.has(base) || recorded.has(name), `${where}: ${name} is neither exported nor recorded`);
      }
    }
  });

  test('every query is valid PromQL (promtool check rules)', async () => {
    const work = await mkdtemp(path.join(tmpdir(), 'triage-dashboards-'));
    try {
      const rules = exprs().map(({ expr }, i) => ({
        record: `dashboard:query_${i}`,
        expr: expr.replaceAll('$model', '.*'),
      }));
      await writeFile(
        path.join(work, 'queries.yml'),
        YAML.stringify({ groups: [{ name: 'dashboard-queries', rules }] }),
      );
      const { stdout } = await run('promtool', ['check', 'rules', 'queries.yml'], { cwd: work }).catch((err) => {
        assert.fail(`promtool check rules failed:\n${err.stdout ?? ''}${err.stderr ?? err.message}`);
      });
      assert.match(stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
