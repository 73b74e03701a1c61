/**
 * The Dockerfile without a container engine: its instructions are parsed and checked against what the code needs
 * (the build stage gets every top-level folder the entry points import, production dependencies only at run time,
 * no TypeScript toolchain in the image, the onnxruntime install switch, non-root, health check, stop signal), and the
 * image is staged in temporary folders: the build stage's files (exactly its COPY lines, minus .dockerignore) are
 * built with its own RUN command, and the runtime stage gets its COPY lines plus the build's dist/ and a node_modules
 * holding only the production packages. Started from there with the image's environment and command, the gateway must
 * come up, pass the image's own HEALTHCHECK command, score a batch run in its worker thread (compiled, without tsx)
 * and drain on SIGTERM; the worker entry must load every worker module.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execSync, spawn, spawnSync } from 'node:child_process';
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
import { deletePrefix, raiseBudgets, waitFor } from './support/index.ts';

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
function importGraph(entries: string[], root = ROOT): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const rel = queue.pop() as string;
    if (files.has(rel)) continue;
    files.add(rel);
    const source = readFileSync(path.join(root, rel), 'utf8');
    const specifiers = [
      ...source.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/gm),
      ...source.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm),
      ...source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g),
      // new URL('./x', import.meta.url), also with a choice of paths: new URL(a ? './x.ts' : './x.js', import.meta.url)
      ...[...source.matchAll(/new URL\(([^;]*?),\s*import\.meta\.url\s*\)/g)].flatMap((m) => [
        ...(m[1] as string).matchAll(/['"](\.{1,2}\/[^'"]+)['"]/g),
      ]),
    ].map((m) => m[1] as string);
    for (const spec of specifiers) {
      if (spec.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
        if (existsSync(path.join(root, target)) && statSync(path.join(root, target)).isFile()) queue.push(target);
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
const deps = dockerfile.stages.find((s) =>
  s.instructions.some((i) => i.op === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)),
);
const build = dockerfile.stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /npm run build/.test(i.args)));
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
};
/** What `npm ci --omit=dev` installs: the lock's packages not marked dev. */
const isProduction = (name: string) => {
  const entry = lock.packages[`node_modules/${name}`];
  return entry !== undefined && !entry.dev && !entry.devOptional;
};
const ignored = dockerignore(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'));
/** What a stage copies from the build context (paths relative to the repo). */
const fromContext = (stage: Stage | undefined) =>
  copies(stage as Stage)
    .filter((c) => !c.from)
    .flatMap((c) => c.sources);
const copiedFromContext = fromContext(runtime);
/** The gateway's command without the build: `npm start` once its prestart (the build) has run. */
const START = ['node', 'dist/src/server.js'];
const WORKER = ['node', 'dist/workers/main.js'];

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

  it('builds in its own stage: every top-level folder the entry points import, compiled by `npm run build`', () => {
    assert.ok(build, 'a stage runs npm run build');
    assert.notEqual(build, runtime);
    const { files } = importGraph(ENTRY_POINTS);
    const topLevel = new Set([...files].map((f) => f.split('/')[0] as string));
    const sources = fromContext(build);
    for (const dir of topLevel) assert.ok(sources.includes(dir), `the build stage copies ${dir}`);
    for (const file of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) {
      assert.ok(sources.includes(file), `the build stage copies ${file}`);
    }
    assert.equal(envOf(build).ONNXRUNTIME_NODE_INSTALL, 'skip', 'its npm ci skips the GPU download too');
    assert.ok(pkg.scripts.build?.includes('tsconfig.build.json'), 'npm run build compiles with tsconfig.build.json');
    // every entry point, and the thread modules (the batch worker's, the shadows'; loaded by URL, not imported), is
    // compiled
    const tsconfig = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')) as { files: string[] };
    const threads = [...files].filter((f) => /^(workers\/batch|src\/serving\/shadow)-thread\.ts$/.test(f));
    assert.deepEqual(
      threads.sort(),
      ['src/serving/shadow-thread.ts', 'workers/batch-thread.ts'],
      'the thread modules are found through their URLs',
    );
    for (const file of threads) assert.ok(tsconfig.files.includes(file), `tsconfig.build.json compiles ${file}`);
  });

  it('runs the compiled build: dist/ from the build stage, the models, no sources and no TypeScript toolchain', () => {
    assert.ok(
      copies(runtime).some((c) => c.from === build?.name && c.sources.includes('/app/dist')),
      'COPY --from=build /app/dist',
    );
    assert.ok(copiedFromContext.includes('models'), 'COPY models');
    assert.ok(copiedFromContext.includes('package.json'), 'COPY package.json ("type": "module" for dist/)');
    for (const dir of ['src', 'routes', 'workers', 'tsconfig.json', 'test', 'load-tests', 'k8s', 'bench-results']) {
      assert.ok(!copiedFromContext.includes(dir), `the runtime stage does not copy ${dir}`);
    }
    for (const tool of ['typescript', 'tsx', 'esbuild']) {
      assert.ok(!isProduction(tool), `${tool} is a dev package: npm ci --omit=dev leaves it out of the image`);
    }
    assert.ok('tsx' in pkg.devDependencies && 'typescript' in pkg.devDependencies);
    assert.equal(envOf(runtime).TRIAGE_MODELS_DIR ?? 'models', 'models');
  });

  it('runs `npm start`, as a non-root numeric user, PID 1 handling SIGTERM, with a health check on /healthz', () => {
    const cmd = runtime.instructions.find((i) => i.op === 'CMD') as Instruction;
    assert.deepEqual(execForm(cmd.args), START, 'CMD (exec form): node on the compiled gateway');
    assert.deepEqual(pkg.scripts.start?.split(' '), START, 'npm start runs the same command');
    assert.equal(pkg.scripts.prestart, 'npm run build', 'after building (a fresh clone has no dist/)');
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

  it('writes only to /data: a VOLUME and TRIAGE_DATA_DIR', () => {
    const env = envOf(runtime);
    assert.equal(env.TRIAGE_DATA_DIR, '/data');
    assert.ok(runtime.instructions.some((i) => i.op === 'VOLUME' && i.args.includes('/data')));
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
    for (const source of [...copiedFromContext, ...fromContext(build)]) {
      for (const file of filesUnder(source)) assert.ok(!ignored(file), `${file} is copied but .dockerignore drops it`);
    }
    assert.ok(ignored('dist/src/server.js'), 'a local dist/ stays out: the build stage compiles its own');
  });

  it('every command of the k8s manifests is the compiled gateway or worker entry', () => {
    let seen = 0;
    for (const o of kustomize(path.join(ROOT, 'k8s/base'))) {
      const spec = (o.spec ?? {}) as { template?: { spec?: { containers?: Array<{ command?: string[] }> } } };
      for (const c of spec.template?.spec?.containers ?? []) {
        if (c.command?.[0] !== 'node') continue;
        seen++;
        assert.ok(
          [START, WORKER].some((entry) => entry.join(' ') === c.command?.join(' ')),
          `${c.command.join(' ')} is ${START.join(' ')} or ${WORKER.join(' ')}`,
        );
      }
    }
    assert.ok(seen >= 5, 'the gateway and the four worker kinds');
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

  let buildDir: string;

  /** The files a stage copies from the context, as the image would have them. */
  function stageContext(dir: string, sources: string[]) {
    for (const source of sources) {
      for (const file of filesUnder(source).filter((f) => !ignored(f))) {
        mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
        cpSync(path.join(ROOT, file), path.join(dir, file));
      }
    }
  }

  before(async () => {
    // the build stage: its context files, all packages (npm ci), and its own RUN command
    buildDir = mkdtempSync(path.join(tmpdir(), 'triage-image-build-'));
    stageContext(buildDir, fromContext(build));
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(buildDir, 'node_modules'), 'dir');
    const run = (build as Stage).instructions.filter((i) => i.op === 'RUN' && !/npm ci/.test(i.args));
    for (const r of run) execSync(r.args, { cwd: buildDir, stdio: 'pipe', env: { PATH: process.env.PATH } });

    stage = mkdtempSync(path.join(tmpdir(), 'triage-image-'));
    data = path.join(stage, '.data');
    mkdirSync(data);
    stageContext(stage, copiedFromContext);
    cpSync(path.join(buildDir, 'dist'), path.join(stage, 'dist'), { recursive: true });
    // the deps stage's node_modules: production packages only (what npm ci --omit=dev installs), so the compiled app
    // cannot lean on tsx, typescript or any other dev package. Each is a link into the repo's node_modules.
    const modules = path.join(stage, 'node_modules');
    for (const key of Object.keys(lock.packages)) {
      const name = key.startsWith('node_modules/') ? key.slice('node_modules/'.length) : '';
      if (!name || name.includes('/node_modules/') || !isProduction(name)) continue;
      mkdirSync(path.dirname(path.join(modules, name)), { recursive: true });
      symlinkSync(path.join(ROOT, 'node_modules', name), path.join(modules, name), 'dir');
    }
    // this test is about starting and stopping, not deadlines: budgets a busy machine meets
    await raiseBudgets(path.join(stage, 'models'));
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
    rmSync(buildDir, { recursive: true, force: true });
    await deletePrefix(prefix);
  });

  it('every package the compiled entry points import is installed by npm ci --omit=dev (per package-lock.json)', () => {
    // lazily imported modules too (the SageMaker and Vertex runtimes), which a start alone would not load
    const { files, packages } = importGraph([`${START[1]}`, `${WORKER[1]}`], stage);
    assert.ok(files.has('dist/src/runtime/sagemaker.js') && files.has('dist/workers/batch-thread.js'));
    assert.ok(packages.size > 5, `found the imports: ${[...packages].join(', ')}`);
    for (const p of packages) {
      assert.ok(lock.packages[`node_modules/${p}`], `${p} is imported at run time but not in package-lock.json`);
      assert.ok(isProduction(p), `${p} is imported at run time: move it to dependencies`);
    }
  });

  it('holds no TypeScript: no .ts source, no tsx, no typescript', () => {
    const staged = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isSymbolicLink() ? [] : e.isDirectory() ? staged(path.join(dir, e.name)) : [path.join(dir, e.name)],
      );
    const sources = staged(stage).filter((f) => f.endsWith('.ts') && !f.includes(`${path.sep}models${path.sep}`));
    assert.deepEqual(sources, [], 'the runtime needs no TypeScript source');
    for (const tool of ['tsx', 'typescript', 'esbuild']) assert.ok(!existsSync(path.join(stage, 'node_modules', tool)));
    assert.ok(existsSync(path.join(stage, 'dist/workers/batch-thread.js')), 'the batch thread module is compiled');
    assert.ok(
      existsSync(path.join(stage, 'dist/src/serving/shadow-thread.js')),
      'the shadow thread module is compiled',
    );
  });

  it('the worker entry loads every worker module (and refuses an unknown kind with 64)', () => {
    const [node, ...args] = WORKER as [string, ...string[]];
    const r = spawnSync(node, [...args, 'no-such-kind'], {
      cwd: stage,
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 64, r.stderr);
    assert.match(r.stderr, /choose from inference, callbacks, maintenance/);
  });

  it('a batch run scores in its worker thread from the compiled build (no tsx to register)', async () => {
    const port = await freePort();
    // the dev client key's data area (k8s/overlays/dev/dev-api-keys.yaml: id dev-client)
    const area = path.join(data, 'clients', 'dev-client', 'inputs');
    mkdirSync(area, { recursive: true });
    cpSync(path.join(ROOT, 'models/readmission/sample-discharges.ndjson'), path.join(area, 'discharges.ndjson'));
    const [command, ...args] = START as [string, ...string[]];
    const child = spawn(command, args, {
      cwd: stage,
      env: { ...env, TRIAGE_PORT: String(port), TRIAGE_WORKERS: 'batch', TRIAGE_SHUTDOWN_GRACE_MS: '2000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (d) => {
      output += d;
    });
    child.stderr?.on('data', (d) => {
      output += d;
    });
    const headers = {
      authorization: 'Bearer trg_client_dev-only-not-a-secret',
      'content-type': 'application/json',
    };
    try {
      await waitFor(
        async () => {
          assert.equal(child.exitCode, null, `the gateway exited:\n${output}`);
          return fetch(`http://127.0.0.1:${port}/readyz`).then(
            (r) => r.ok,
            () => false,
          );
        },
        () => `the gateway to be ready:\n${output}`,
        60_000,
        200,
      );
      const submitted = await fetch(`http://127.0.0.1:${port}/v1/models/readmission/batches`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ input: { path: 'inputs/discharges.ndjson', format: 'ndjson' } }),
      });
      assert.equal(submitted.status, 202, await submitted.text());
      const status = submitted.headers.get('content-location') as string; // absolute, as the Bulk Data IG says
      let res = await fetch(status, { headers });
      await waitFor(
        async () => {
          if (res.status !== 202) return true;
          await res.arrayBuffer();
          res = await fetch(status, { headers });
          return res.status !== 202;
        },
        'the batch run to finish',
        60_000,
        200,
      );
      const body = (await res.json()) as { output?: Array<{ count: number }>; error?: Array<{ count: number }> };
      assert.equal(res.status, 200, `${JSON.stringify(body)}\n${output}`);
      const rows = (files?: Array<{ count: number }>) => (files ?? []).reduce((n, f) => n + f.count, 0);
      assert.ok(rows(body.output) > 0, 'rows scored');
      assert.equal(rows(body.output) + rows(body.error), 200, 'every row of the sample lands once');
      child.kill('SIGTERM');
      assert.equal(await exited(child), 0, `exit 0:\n${output}`);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
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
      await waitFor(
        async () => {
          assert.equal(child.exitCode, null, `the gateway exited:\n${output}`);
          return fetch(`http://127.0.0.1:${port}/healthz`).then(
            (r) => r.ok,
            () => false,
          );
        },
        () => `the gateway to come up:\n${output}`,
        60_000,
        200,
      );
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
      // deterioration v2 shadows every request: its shadow thread runs from the compiled build too (no tsx there)
      const client = { authorization: 'Bearer trg_client_dev-only-not-a-secret', 'content-type': 'application/json' };
      const vitals = { age: 70, respirationRate: 24, spo2: 93, systolicBP: 105, pulse: 110, temperature: 38.2 };
      await waitFor(
        async () => {
          const scored = await fetch(`http://127.0.0.1:${port}/v1/models/deterioration/predict`, {
            method: 'POST',
            headers: client,
            body: JSON.stringify({ instances: [{ ...vitals, onOxygen: false }] }),
          });
          await scored.arrayBuffer(); // a 504 on a busy machine is tried again
          const report = await fetch(`http://127.0.0.1:${port}/v1/models/deterioration/shadow`, { headers: client });
          const body = (await report.json()) as { shadows: Array<{ version: string; pairs: number }> };
          return body.shadows.some((s) => s.version === '2' && s.pairs > 0);
        },
        () => `a shadow pair scored in the compiled shadow thread:\n${output}`,
        60_000,
        500,
      );
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
