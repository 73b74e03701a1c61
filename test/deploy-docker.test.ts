/**
 * The Dockerfile without a container engine: its instructions are parsed and checked against what the code needs
 * (every top-level folder the entry points import, production dependencies only, the onnxruntime install switch,
 * non-root, health check, stop signal), and the image's file set is staged in a temporary folder (exactly the COPY
 * lines, minus .dockerignore) and started from there with the image's environment and command: the gateway must come
 * up, pass the image's own HEALTHCHECK command and drain on SIGTERM; the worker entry must load every worker module.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { builtinModules } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { kustomize } from './deploy-kustomize.ts';
import { deleteRedisPrefix } from './support.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REDIS_URL = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';
const ENTRY_POINTS = ['src/server.ts', 'workers/main.ts'];

// ---- Dockerfile parsing ----------------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
  line: number;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

function parseDockerfile(text: string): { args: Record<string, string>; stages: Stage[] } {
  const logical: Instruction[] = [];
  let buffer = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (buffer === '' && (line.trim() === '' || line.trim().startsWith('#'))) return;
    if (buffer !== '' && line.trim().startsWith('#')) return;
    if (buffer === '') start = i + 1;
    if (line.endsWith('\\')) {
      buffer += `${line.slice(0, -1)} `;
      return;
    }
    buffer += line;
    const match = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(buffer);
    if (match) logical.push({ op: (match[1] as string).toUpperCase(), args: (match[2] as string).trim(), line: start });
    buffer = '';
  });
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of logical) {
    if (ins.op === 'ARG' && stages.length === 0) {
      const [k, v] = ins.args.split('=');
      if (k && v !== undefined) args[k] = v;
    } else if (ins.op === 'FROM') {
      const [image, as, name] = ins.args.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args[a ?? b] ?? '').split(/\s+/);
      stages.push({ from: image as string, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else {
      assert.ok(stages.length > 0, `line ${ins.line}: ${ins.op} before FROM`);
      stages.at(-1)?.instructions.push(ins);
    }
  }
  return { args, stages };
}

/** ENV lines (key=value pairs, possibly several per line) of a stage, in order. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.op === 'ENV')) {
    for (const m of ins.args.matchAll(/(\w+)=("([^"]*)"|\S*)/g)) env[m[1] as string] = m[3] ?? (m[2] as string);
  }
  return env;
}

const execForm = (args: string): string[] => JSON.parse(args) as string[];

/** COPY sources (not from another stage) of a stage, and their destination. */
function copies(stage: Stage): Array<{ sources: string[]; dest: string; from?: string }> {
  return stage.instructions
    .filter((i) => i.op === 'COPY')
    .map((i) => {
      const parts = i.args.split(/\s+/);
      const flags = parts.filter((p) => p.startsWith('--'));
      const rest = parts.filter((p) => !p.startsWith('--'));
      const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
      return { sources: rest.slice(0, -1), dest: rest.at(-1) as string, ...(from ? { from } : {}) };
    });
}

// ---- .dockerignore ---------------------------------------------------------------------------------------------------

/** Docker's matching: patterns relative to the context root, `*` within a segment, `**` any depth, `!` re-includes. */
function dockerignore(text: string): (file: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = path.posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, ''));
      const source = pattern
        .split('/')
        .map((seg) =>
          seg === '**'
            ? '.*'
            : seg
                .replace(/[.+^${}()|[\]\\]/g, '\\$&')
                .replaceAll('*', '[^/]*')
                .replaceAll('?', '[^/]'),
        )
        .join('/')
        .replaceAll('.*/', '(?:.*/)?');
      return { negate, re: new RegExp(`^${source}(?:/.*)?$`) };
    });
  return (file) => {
    let ignored = false;
    for (const r of rules) if (r.re.test(file)) ignored = !r.negate;
    return ignored;
  };
}

function filesUnder(rel: string): string[] {
  const full = path.join(ROOT, rel);
  if (!statSync(full).isDirectory()) return [rel];
  return readdirSync(full).flatMap((entry) => filesUnder(path.posix.join(rel, entry)));
}

// ---- import graph ----------------------------------------------------------------------------------------------------

/** Every file reachable from the entry points through relative imports (and `new URL('./x', import.meta.url)`). */
function importGraph(entries: string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const rel = queue.pop() as string;
    if (files.has(rel)) continue;
    files.add(rel);
    const source = readFileSync(path.join(ROOT, rel), 'utf8');
    const specifiers = [
      ...source.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/gm),
      ...source.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm),
      ...source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g),
      ...source.matchAll(/new URL\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g),
    ].map((m) => m[1] as string);
    for (const spec of specifiers) {
      if (spec.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
        if (existsSync(path.join(ROOT, target)) && statSync(path.join(ROOT, target)).isFile()) queue.push(target);
      } else if (!spec.startsWith('node:') && !builtinModules.includes(spec.split('/')[0] as string)) {
        const parts = spec.split('/');
        packages.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] as string));
      }
    }
  }
  return { files, packages };
}

// ---- the tests -------------------------------------------------------------------------------------------------------

const dockerfile = parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
const runtime = dockerfile.stages.at(-1) as Stage;
const deps = dockerfile.stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /npm ci/.test(i.args)));
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
};
const ignored = dockerignore(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'));
/** What the runtime stage copies from the build context (paths relative to the repo). */
const copiedFromContext = copies(runtime)
  .filter((c) => !c.from)
  .flatMap((c) => c.sources);

describe('Dockerfile', () => {
  it('is multi-stage on a current Node LTS slim image', () => {
    assert.ok(dockerfile.stages.length >= 2, 'a dependencies stage and a runtime stage');
    for (const s of dockerfile.stages) {
      const m = /^node:(\d+)(?:[.\d]*)-(?:[a-z]+-)?slim$/.exec(s.from);
      assert.ok(m, `${s.from}: a node slim image`);
      assert.ok(Number(m[1]) >= 22 && Number(m[1]) % 2 === 0, `${s.from}: an LTS line (even), 22 or later`);
    }
  });

  it('installs production dependencies only, with the onnxruntime install switch, from the lock file', () => {
    assert.ok(deps, 'a stage runs npm ci');
    const run = deps.instructions.find((i) => i.op === 'RUN' && /npm ci/.test(i.args)) as Instruction;
    assert.match(run.args, /npm ci\b.*--omit=dev/);
    assert.equal(envOf(deps).ONNXRUNTIME_NODE_INSTALL, 'skip', 'ENV ONNXRUNTIME_NODE_INSTALL=skip before npm ci');
    const envLine = deps.instructions.find(
      (i) => i.op === 'ENV' && /ONNXRUNTIME_NODE_INSTALL/.test(i.args),
    ) as Instruction;
    assert.ok(envLine.line < run.line);
    const lockCopy = copies(deps).find((c) => c.sources.includes('package-lock.json'));
    assert.ok(lockCopy?.sources.includes('package.json'), 'package.json and package-lock.json copied before npm ci');
    assert.ok(copies(runtime).some((c) => c.from === deps.name && c.sources.some((s) => s.endsWith('node_modules'))));
  });

  it('copies every top-level folder the entry points import, the models, and what tsx needs', () => {
    const { files } = importGraph(ENTRY_POINTS);
    const topLevel = new Set([...files].map((f) => f.split('/')[0] as string));
    for (const dir of [...topLevel, 'models']) assert.ok(copiedFromContext.includes(dir), `COPY ${dir}`);
    for (const file of ['package.json', 'package-lock.json', 'tsconfig.json']) {
      assert.ok(copiedFromContext.includes(file), `COPY ${file}`);
    }
    // and nothing the tests or the benchmark need
    for (const dir of ['test', 'load-tests', 'k8s', 'bench-results']) assert.ok(!copiedFromContext.includes(dir));
    assert.equal(envOf(runtime).TRIAGE_MODELS_DIR ?? 'models', 'models');
  });

  it('every package the entry points import is installed by npm ci --omit=dev (per package-lock.json)', () => {
    const { packages } = importGraph(ENTRY_POINTS);
    assert.ok(packages.size > 5, `found the imports: ${[...packages].join(', ')}`);
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
    };
    for (const p of packages) {
      const entry = lock.packages[`node_modules/${p}`];
      assert.ok(entry, `${p} is imported at run time but not in package-lock.json`);
      assert.ok(!entry.dev && !entry.devOptional, `${p} is imported at run time: move it to dependencies`);
    }
    assert.ok('tsx' in pkg.dependencies, 'the image runs node --import tsx: tsx is a production dependency');
  });

  it('runs `npm start`, as a non-root numeric user, PID 1 handling SIGTERM, with a health check on /healthz', () => {
    const cmd = runtime.instructions.find((i) => i.op === 'CMD') as Instruction;
    assert.deepEqual(execForm(cmd.args), pkg.scripts.start?.split(' '), 'CMD (exec form) = npm start');
    assert.equal(
      runtime.instructions.find((i) => i.op === 'ENTRYPOINT'),
      undefined,
      'no shell wrapper as PID 1',
    );
    const user = runtime.instructions.filter((i) => i.op === 'USER').at(-1) as Instruction;
    assert.match(user.args, /^10001(:10001)?$/, 'USER 10001 (numeric, so runAsNonRoot can verify it)');
    assert.ok(runtime.instructions.some((i) => i.op === 'RUN' && /useradd .*--uid 10001/.test(i.args)));
    assert.equal(runtime.instructions.find((i) => i.op === 'STOPSIGNAL')?.args, 'SIGTERM');
    const health = runtime.instructions.find((i) => i.op === 'HEALTHCHECK') as Instruction;
    assert.ok(health, 'HEALTHCHECK');
    const probe = execForm(health.args.slice(health.args.indexOf('CMD') + 3).trim());
    assert.equal(probe[0], 'node', 'the health check uses node (no curl in the slim image)');
    assert.match(probe.join(' '), /\/healthz/);
    assert.match(health.args, /--start-period=\d+s/);
  });

  it('writes only to /data: a VOLUME, TRIAGE_DATA_DIR, and no tsx cache on the read-only root', () => {
    const env = envOf(runtime);
    assert.equal(env.TRIAGE_DATA_DIR, '/data');
    assert.ok(runtime.instructions.some((i) => i.op === 'VOLUME' && i.args.includes('/data')));
    assert.equal(env.TSX_DISABLE_CACHE, '1', 'tsx would cache under /tmp');
    assert.equal(env.TRIAGE_ENV, 'production', 'refuses to start without API keys');
  });

  it('.dockerignore keeps out the repo’s bulk and none of what the image copies', () => {
    for (const p of [
      'node_modules',
      '.git',
      'test/x.test.ts',
      'load-tests/bench.ts',
      'bench-results/a.json',
      'data/x',
      'a.log',
    ]) {
      assert.ok(ignored(p), `${p} is ignored`);
    }
    for (const source of copiedFromContext) {
      for (const file of filesUnder(source)) assert.ok(!ignored(file), `${file} is copied but .dockerignore drops it`);
    }
  });

  it('every command of the k8s manifests is a script the image contains', () => {
    for (const o of kustomize(path.join(ROOT, 'k8s/base'))) {
      const spec = (o.spec ?? {}) as { template?: { spec?: { containers?: Array<{ command?: string[] }> } } };
      for (const c of spec.template?.spec?.containers ?? []) {
        if (c.command?.[0] !== 'node') continue;
        const script = c.command.at(-1) as string;
        assert.ok(copiedFromContext.includes(script.split('/')[0] as string), `${script} is in the image`);
      }
    }
  });
});

// ---- the image's files, run without Docker ---------------------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

describe('the image’s files, started the way the image starts them', () => {
  let stage: string;
  let data: string;
  let env: NodeJS.ProcessEnv;
  const prefix = `{triage-image-${randomBytes(4).toString('hex')}}`;

  before(() => {
    stage = mkdtempSync(path.join(tmpdir(), 'triage-image-'));
    data = path.join(stage, '.data');
    mkdirSync(data);
    for (const source of copiedFromContext) {
      for (const file of filesUnder(source).filter((f) => !ignored(f))) {
        mkdirSync(path.dirname(path.join(stage, file)), { recursive: true });
        cpSync(path.join(ROOT, file), path.join(stage, file));
      }
    }
    // the deps stage's node_modules (here with dev packages too: the import check above covers --omit=dev)
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(stage, 'node_modules'), 'dir');
    env = {
      PATH: process.env.PATH,
      ...envOf(runtime),
      // tmpdir() is unwritable, as on the read-only root filesystem
      TMPDIR: '/proc/triage-no-tmp',
      TRIAGE_DATA_DIR: data,
      TRIAGE_REDIS_URL: REDIS_URL,
      TRIAGE_REDIS_PREFIX: prefix,
      TRIAGE_API_KEYS_FILE: path.join(ROOT, 'k8s/overlays/dev/dev-api-keys.yaml'),
      TRIAGE_HOST: '127.0.0.1',
      TRIAGE_WARMUP_RUNS: '5',
      TRIAGE_LOG_LEVEL: 'warn',
    };
  });
  after(async () => {
    rmSync(stage, { recursive: true, force: true });
    await deleteRedisPrefix(prefix);
  });

  it('the worker entry loads every worker module (and refuses an unknown kind with 64)', () => {
    const r = spawnSync('node', ['--import', 'tsx', 'workers/main.ts', 'no-such-kind'], {
      cwd: stage,
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 64, r.stderr);
    assert.match(r.stderr, /choose from inference, callbacks, maintenance/);
  });

  it('the gateway starts from CMD, passes the HEALTHCHECK command, is ready, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const [command, ...args] = execForm((runtime.instructions.find((i) => i.op === 'CMD') as Instruction).args) as [
      string,
      ...string[],
    ];
    const child = spawn(command, args, {
      cwd: stage,
      env: { ...env, TRIAGE_PORT: String(port), TRIAGE_WORKERS: 'none', TRIAGE_SHUTDOWN_GRACE_MS: '2000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (d) => {
      output += d;
    });
    child.stderr?.on('data', (d) => {
      output += d;
    });
    try {
      const deadline = Date.now() + 60_000;
      let healthy = false;
      while (!healthy && Date.now() < deadline && child.exitCode === null) {
        healthy = await fetch(`http://127.0.0.1:${port}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
        if (!healthy) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(healthy, `the gateway came up:\n${output}`);
      const health = runtime.instructions.find((i) => i.op === 'HEALTHCHECK') as Instruction;
      const [probe, ...probeArgs] = execForm(health.args.slice(health.args.indexOf('CMD') + 3).trim()) as [
        string,
        ...string[],
      ];
      const check = spawnSync(probe, probeArgs, {
        cwd: stage,
        env: { ...env, TRIAGE_PORT: String(port) },
        timeout: 10_000,
      });
      assert.equal(check.status, 0, 'the HEALTHCHECK command passes');
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
      const models = await fetch(`http://127.0.0.1:${port}/v1/models`, {
        headers: { authorization: 'Bearer trg_client_dev-only-not-a-secret' },
      });
      assert.equal(models.status, 200, 'the dev client key works');
      child.kill('SIGTERM');
      assert.equal(await exited(child), 0, `exit 0 after draining:\n${output}`);
      const after = spawnSync(probe, probeArgs, {
        cwd: stage,
        env: { ...env, TRIAGE_PORT: String(port) },
        timeout: 10_000,
      });
      assert.equal(after.status, 1, 'the HEALTHCHECK command fails once the gateway is gone');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
