/**
 * Environment → config, and the API key store: every failure names the variable or the field it is about.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { ConfigError, isLoopback, loadConfig } from '../src/platform/config.ts';

const KEY = 'trg_test_key_0123456789abcdef';
const KEYS_YAML = `keys:\n  - id: ehr-app\n    role: client\n    sha256: ${hashKey(KEY)}\n    models: [news2]\n`;

function configError(env: NodeJS.ProcessEnv, ...fragments: string[]): string {
  let message = '';
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
      message = err.message;
      return true;
    },
  );
  for (const f of fragments) assert.ok(message.includes(f), `"${message}" should contain "${f}"`);
  return message;
}

describe('loadConfig', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'triage-config-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('defaults: development mode on loopback, port 8080', () => {
    const c = loadConfig({});
    assert.equal(c.env, 'development');
    assert.equal(c.port, 8080);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.apiKeys, undefined);
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.redisPrefix, '{triage}');
    assert.equal(c.modelsDir, 'models');
    assert.equal(c.maxBodyBytes, 1024 * 1024);
    assert.equal(c.syncCeilingMs, 5_000);
    assert.equal(c.warmupPolicy, 'refuse');
    assert.equal(c.openOpsEndpoints, true);
    assert.equal(c.accessLog, true);
  });

  it('reads only TRIAGE_ variables; an empty value counts as unset', () => {
    const c = loadConfig({ PORT: '1234', HOST: '0.0.0.0', TRIAGE_PORT: '', TRIAGE_LOG_LEVEL: '' });
    assert.equal(c.port, 8080);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.logLevel, 'info');
  });

  it('parses numbers and booleans', () => {
    const c = loadConfig({
      TRIAGE_PORT: '0',
      TRIAGE_ACCESS_LOG: 'no',
      TRIAGE_OPEN_OPS_ENDPOINTS: '0',
      TRIAGE_WARMUP_RUNS: '7',
    });
    assert.equal(c.port, 0);
    assert.equal(c.accessLog, false);
    assert.equal(c.openOpsEndpoints, false);
    assert.equal(c.warmupRuns, 7);
  });

  it('a bad value fails naming the variable', () => {
    configError({ TRIAGE_PORT: 'abc' }, 'TRIAGE_PORT:');
    configError({ TRIAGE_PORT: '70000' }, 'TRIAGE_PORT:');
    configError({ TRIAGE_PORT: '80.5' }, 'TRIAGE_PORT:');
    configError({ TRIAGE_ENV: 'staging' }, 'TRIAGE_ENV:');
    configError({ TRIAGE_ACCESS_LOG: 'maybe' }, 'TRIAGE_ACCESS_LOG:');
    configError(
      { TRIAGE_REDIS_URL: 'http://127.0.0.1:6379' },
      'TRIAGE_REDIS_URL: must be a redis://, rediss:// or redis-cluster://host:port,… URL',
    );
    configError({ TRIAGE_MAX_BODY_BYTES: '10' }, 'TRIAGE_MAX_BODY_BYTES:');
    configError({ TRIAGE_WARMUP_POLICY: 'ignore' }, 'TRIAGE_WARMUP_POLICY:');
  });

  it('production needs API keys, and then binds to every interface by default', () => {
    configError({ TRIAGE_ENV: 'production' }, 'TRIAGE_API_KEYS', 'production needs API keys');
    const c = loadConfig({ TRIAGE_ENV: 'production', TRIAGE_API_KEYS: KEYS_YAML });
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.apiKeys, KEYS_YAML);
  });

  it('development without keys refuses a non-loopback host', () => {
    for (const host of ['0.0.0.0', '10.1.2.3', '::', 'gateway.example.org', '127.0.0.1.example.org']) {
      configError({ TRIAGE_HOST: host }, 'TRIAGE_HOST:', 'loopback');
    }
    for (const host of ['127.0.0.1', '127.0.0.2', 'localhost', '::1']) {
      assert.equal(loadConfig({ TRIAGE_HOST: host }).host, host);
    }
    // with keys configured, development may bind anywhere
    assert.equal(loadConfig({ TRIAGE_HOST: '0.0.0.0', TRIAGE_API_KEYS: KEYS_YAML }).host, '0.0.0.0');
  });

  it('isLoopback', () => {
    for (const h of ['localhost', '127.0.0.1', '127.255.0.9', '::1', '[::1]']) assert.equal(isLoopback(h), true, h);
    for (const h of ['0.0.0.0', '::', '128.0.0.1', 'localhost.example.org', '127.0.0.1.nip.io', '1127.0.0.1']) {
      assert.equal(isLoopback(h), false, h);
    }
  });

  it('TRIAGE_X_FILE supplies TRIAGE_X from a file (secret mounts), trimmed', async () => {
    const file = path.join(dir, 'api-keys.yaml');
    await writeFile(file, `${KEYS_YAML}\n\n`);
    const c = loadConfig({ TRIAGE_ENV: 'production', TRIAGE_API_KEYS_FILE: file });
    assert.equal(c.apiKeys, KEYS_YAML.trim());
    assert.ok(ApiKeyStore.parse(c.apiKeys ?? '').authenticate(KEY));

    const portFile = path.join(dir, 'port');
    await writeFile(portFile, '9090\n');
    assert.equal(loadConfig({ TRIAGE_PORT_FILE: portFile }).port, 9090);
  });

  it('X and X_FILE both set is an error; an unreadable file names the variable', async () => {
    const file = path.join(dir, 'keys-both.yaml');
    await writeFile(file, KEYS_YAML);
    configError(
      { TRIAGE_API_KEYS: KEYS_YAML, TRIAGE_API_KEYS_FILE: file },
      'TRIAGE_API_KEYS and TRIAGE_API_KEYS_FILE are both set',
    );
    configError(
      { TRIAGE_API_KEYS_FILE: path.join(dir, 'missing.yaml') },
      'TRIAGE_API_KEYS_FILE: cannot read',
      'ENOENT',
    );
  });
});

describe('ApiKeyStore', () => {
  const entry = (over: Record<string, unknown> = {}) => ({
    id: 'ehr-app',
    role: 'client',
    sha256: hashKey(KEY),
    ...over,
  });
  const parseError = (doc: unknown, ...fragments: string[]) => {
    const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
    let message = '';
    assert.throws(
      () => ApiKeyStore.parse(text),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
        message = err.message;
        return true;
      },
    );
    for (const f of fragments) assert.ok(message.includes(f), `"${message}" should contain "${f}"`);
    return message;
  };

  it('parses YAML and JSON', () => {
    const principal = ApiKeyStore.parse(KEYS_YAML).authenticate(KEY);
    assert.equal(principal?.id, 'ehr-app');
    assert.equal(principal?.role, 'client');
    assert.deepEqual([...(principal?.models ?? [])], ['news2']);
    const fromJson = ApiKeyStore.parse(JSON.stringify({ keys: [entry({ role: 'admin' })] })).authenticate(KEY);
    assert.equal(fromJson?.role, 'admin');
    assert.deepEqual([...(fromJson?.models ?? [])], ['*'], 'models default to all');
  });

  it('errors name the field', () => {
    parseError('keys: [unclosed', 'TRIAGE_API_KEYS: not valid YAML/JSON');
    parseError(42, 'TRIAGE_API_KEYS: (root)');
    parseError({ keys: [] }, 'TRIAGE_API_KEYS: keys:');
    parseError({ keys: [entry({ role: 'superuser' })] }, 'TRIAGE_API_KEYS: keys.0.role');
    parseError(
      { keys: [entry(), entry({ id: 'second', sha256: 'abc' })] },
      'TRIAGE_API_KEYS: keys.1.sha256',
      '64-hex-digit',
    );
    parseError({ keys: [entry({ id: 'has space' })] }, 'TRIAGE_API_KEYS: keys.0.id');
    // an id or area of "." or ".." would make the data area the folder above: every client's, or every shared one
    for (const name of ['.', '..']) {
      parseError({ keys: [entry({ id: name })] }, 'TRIAGE_API_KEYS: keys.0.id', 'must not be "." or ".."');
      parseError({ keys: [entry({ dataAreas: [name] })] }, 'TRIAGE_API_KEYS: keys.0.dataAreas.0');
    }
    parseError({ keys: [entry({ models: 'news2' })] }, 'TRIAGE_API_KEYS: keys.0.models');
    parseError({ keys: [entry()], extra: true }, 'TRIAGE_API_KEYS:');
    parseError({ keys: [entry(), entry({ id: 'again' })] }, 'TRIAGE_API_KEYS: key "again" duplicates another key');
  });

  it('refuses a key written in clear, and does not echo it', () => {
    const message = parseError({ keys: [entry({ key: KEY })] }, 'TRIAGE_API_KEYS: keys.0');
    assert.ok(!message.includes(KEY));
  });

  it('stores hashes: the clear key authenticates, its hash does not, and the principal carries no key', () => {
    const store = ApiKeyStore.parse(KEYS_YAML);
    const principal = store.authenticate(KEY);
    assert.ok(principal);
    assert.equal(store.authenticate(hashKey(KEY)), undefined, 'the stored hash must not work as a key');
    assert.equal(store.authenticate(`${KEY} `), undefined);
    assert.equal(store.authenticate(KEY.toUpperCase()), undefined);
    assert.equal(store.authenticate(''), undefined);
    assert.equal(store.authenticate(undefined), undefined);
    const dump = JSON.stringify({ ...principal, models: [...principal.models] });
    assert.ok(!dump.includes(KEY) && !dump.includes(hashKey(KEY)));
  });

  it('development keys: one per role, random, each authenticating as its role', () => {
    const a = ApiKeyStore.generateDevelopmentKeys();
    const b = ApiKeyStore.generateDevelopmentKeys();
    for (const role of ['client', 'reviewer', 'admin'] as const) {
      assert.equal(a.store.authenticate(a.keys[role])?.role, role);
      assert.notEqual(a.keys[role], b.keys[role]);
      assert.equal(a.store.authenticate(b.keys[role]), undefined);
      assert.equal(a.store.authenticate(hashKey(a.keys[role])), undefined);
    }
  });
});
