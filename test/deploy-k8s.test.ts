/**
 * k8s/ without a cluster: the base and each overlay are rendered (test/deploy-kustomize.ts; and with `kubectl
 * kustomize` too where one is on PATH, which must give the same objects) and checked for what breaks a rollout or a
 * pod: probes, resources, security, references to things that do not exist, selectors that select nothing, commands
 * that are not in the image, autoscalers aimed at nothing, and config the gateway would refuse at start.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import YAML from 'yaml';
import { ApiKeyStore } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { BATCH_QUEUE } from '../workers/batch-queue.ts';
import { CALLBACK_QUEUE } from '../workers/callbacks.ts';
import { type WorkerKind, workerKinds } from '../workers/index.ts';
import { INFERENCE_QUEUE } from '../workers/inference.ts';
import { imageName, type JsonObject, type K8sObject, kustomize } from './deploy-kustomize.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REDIS_URL = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';

type Target = 'base' | 'dev' | 'prod' | 'prod-cluster';
const TARGETS: Record<Target, string> = {
  base: 'k8s/base',
  dev: 'k8s/overlays/dev',
  prod: 'k8s/overlays/prod',
  'prod-cluster': 'k8s/overlays/prod-cluster',
};
/** Targets on a Redis Cluster: KEDA reads each wait list with its redis-cluster scaler (seed nodes, not one address). */
const CLUSTER_TARGETS: readonly Target[] = ['prod-cluster'];
/** The managed-Redis targets (TLS, the operator's Secrets, a registry image). */
const PROD_TARGETS: readonly Target[] = ['prod', 'prod-cluster'];

/**
 * What a target references but does not contain, because the operator creates it (k8s/README.md, "Before you apply
 * prod"). Anything else referenced must be in the rendered output. Dev provides everything itself.
 */
const PROVIDED_BY_OPERATOR: Record<
  Target,
  Partial<Record<'Secret' | 'ConfigMap' | 'PersistentVolumeClaim', string[]>>
> = {
  base: { Secret: ['triage-api-keys', 'triage-redis'], PersistentVolumeClaim: ['triage-data'] },
  dev: {},
  prod: { Secret: ['triage-api-keys', 'triage-redis'], PersistentVolumeClaim: ['triage-data'] },
  'prod-cluster': { Secret: ['triage-api-keys', 'triage-redis'], PersistentVolumeClaim: ['triage-data'] },
};

/** The Secret keys the operator's Secrets must have (k8s/README.md lists the same). */
const OPERATOR_SECRET_KEYS: Record<string, string[]> = {
  'triage-api-keys': ['keys.yaml'],
  // KEDA_REDIS_ADDRESS for one Redis, KEDA_REDIS_ADDRESSES (seed nodes) for a Redis Cluster
  'triage-redis': ['TRIAGE_REDIS_URL', 'KEDA_REDIS_ADDRESS', 'KEDA_REDIS_ADDRESSES', 'KEDA_REDIS_PASSWORD'],
};

/** The BullMQ queue each queue-driven worker kind takes its jobs from (maintenance has none). */
/** Queues kept per model shard (their wait lists are one per bundled model), and the bundled models. */
const SHARDED_QUEUES = new Set(['inference', 'callbacks', 'batch']);
const BUNDLED_MODELS = readdirSync(path.join(ROOT, 'models'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(path.join(ROOT, 'models', d.name, 'model.yaml')))
  .map((d) => d.name);

const QUEUE_OF: Partial<Record<WorkerKind, string>> = {
  inference: INFERENCE_QUEUE,
  callbacks: CALLBACK_QUEUE,
  batch: BATCH_QUEUE,
};

/** The dev keys published in k8s/README.md and load-tests/k6/README.md. */
const DEV_KEYS = {
  client: 'trg_client_dev-only-not-a-secret',
  reviewer: 'trg_reviewer_dev-only-not-a-secret',
  admin: 'trg_admin_dev-only-not-a-secret',
} as const;

const WORKLOAD_KINDS = ['Deployment', 'StatefulSet'];

/** The pods that score, and so call a cloud runtime when a version is served by SageMaker or Vertex AI. */
const SCORING_WORKER_KINDS: readonly WorkerKind[] = ['inference', 'batch'];

/** Targets whose scoring pods may reach the cloud runtimes (443 out): prod, where cloud versions are expected. */
const CLOUD_TARGETS: readonly Target[] = PROD_TARGETS;

/** Whether a bundled model (models/, which the image carries) has a version served by SageMaker or Vertex AI. */
function bundledCloudVersions(): string[] {
  const dir = path.join(ROOT, 'models');
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(dir, d.name, 'model.yaml')))
    .flatMap((d) => {
      const manifest = YAML.parse(readFileSync(path.join(dir, d.name, 'model.yaml'), 'utf8')) as {
        versions?: Array<{ version: string; runtime?: { kind?: string } }>;
      };
      return (manifest.versions ?? [])
        .filter((v) => v.runtime?.kind === 'sagemaker' || v.runtime?.kind === 'vertex')
        .map((v) => `${d.name}@${v.version}`);
    });
}

/**
 * The labels a Prometheus Operator's serviceMonitorSelector / podMonitorSelector matches: kube-prometheus-stack's
 * default (release=<Helm release>, installed as kube-prometheus-stack). k8s/README.md says how to change it.
 */
const MONITOR_SELECTOR = { release: 'kube-prometheus-stack' };

/** CPU quantity → cores. */
function cores(quantity: string | number): number {
  const q = String(quantity);
  return q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q);
}

// ---- helpers ---------------------------------------------------------------------------------------------------------

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are untyped YAML, checked field by field below
type Obj = Record<string, any>;

const rendered = new Map<Target, K8sObject[]>();
function render(target: Target): K8sObject[] {
  let objects = rendered.get(target);
  if (!objects) {
    objects = kustomize(path.join(ROOT, TARGETS[target]));
    rendered.set(target, objects);
  }
  return objects;
}

const ofKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind) as Obj[];
const find = (objects: K8sObject[], kind: string, name: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name) as Obj | undefined;
const workloads = (objects: K8sObject[]) => objects.filter((o) => WORKLOAD_KINDS.includes(o.kind)) as Obj[];
const podSpec = (w: Obj): Obj => w.spec.template.spec;
const containersOf = (w: Obj): Obj[] => [...(podSpec(w).containers ?? []), ...(podSpec(w).initContainers ?? [])];
const id = (o: Obj) => `${o.kind}/${o.metadata.name}`;

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The image's containers: those running Triage (node dist/…), not Redis. */
function triageContainers(objects: K8sObject[]): Array<{ workload: Obj; container: Obj }> {
  return workloads(objects).flatMap((w) =>
    containersOf(w)
      .filter((c) => c.command?.[0] === 'node')
      .map((container) => ({ workload: w, container })),
  );
}

const gateway = (objects: K8sObject[]) => {
  const w = workloads(objects).find((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'gateway');
  assert.ok(w, 'a gateway Deployment (app.kubernetes.io/component=gateway)');
  return w;
};

const workerKindOf = (w: Obj): string | undefined =>
  w.spec.template.metadata.labels?.['triage/worker-kind'] as string | undefined;

/** Decoded data of a rendered ConfigMap or Secret. */
function dataOf(o: Obj): Record<string, string> {
  const data = (o.data ?? {}) as Record<string, string>;
  if (o.kind !== 'Secret') return { ...data };
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

/** The environment a container starts with, as far as the rendered objects tell (operator Secrets are absent). */
function containerEnv(objects: K8sObject[], container: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const o = find(objects, from.configMapRef ? 'ConfigMap' : 'Secret', ref.name);
    if (o) Object.assign(env, dataOf(o));
  }
  for (const e of container.env ?? []) {
    if (typeof e.value === 'string') env[e.name] = e.value;
    const ref = e.valueFrom?.configMapKeyRef ?? e.valueFrom?.secretKeyRef;
    if (ref) {
      const o = find(objects, e.valueFrom.configMapKeyRef ? 'ConfigMap' : 'Secret', ref.name);
      const value = o ? dataOf(o)[ref.key] : undefined;
      if (value !== undefined) env[e.name] = value;
    }
  }
  return env;
}

function triageConfigMap(objects: K8sObject[]): Record<string, string> {
  const cms = ofKind(objects, 'ConfigMap').filter((c) => c.metadata.name.startsWith('triage-config'));
  assert.equal(cms.length, 1, 'one triage-config ConfigMap');
  return dataOf(cms[0] as Obj);
}

// ---- tests -----------------------------------------------------------------------------------------------------------

describe('k8s: rendering', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: renders with the kustomize subset, every object named once`, () => {
      const objects = render(target);
      assert.ok(objects.length > 10, `${target} renders objects`);
      for (const o of objects) {
        assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${id(o)}: a DNS-1123 name`);
        assert.ok(o.metadata.name.length <= 63, `${id(o)}: 63 characters at most`);
      }
    });
  }

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  const hasKubectl = !kubectl.error && kubectl.status === 0;
  for (const target of Object.keys(TARGETS) as Target[]) {
    // recorded from `kubectl kustomize` (kustomize v5) so the check runs on machines without kubectl; where kubectl is
    // on PATH the recording itself is checked against it, so it cannot go stale silently
    it(`${target}: the same objects as \`kubectl kustomize\` (test/fixtures/k8s/${target}.yaml)`, () => {
      const fixture = path.join(ROOT, 'test', 'fixtures', 'k8s', `${target}.yaml`);
      const recorded = readFileSync(fixture, 'utf8');
      if (hasKubectl) {
        const live = execFileSync('kubectl', ['kustomize', path.join(ROOT, TARGETS[target])], {
          encoding: 'utf8',
          maxBuffer: 16 * 1024 * 1024,
        });
        assert.equal(live, recorded, `${fixture} is stale: regenerate it with kubectl kustomize ${TARGETS[target]}`);
      }
      const theirs = YAML.parseAllDocuments(recorded).map((d) => d.toJS() as K8sObject);
      const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
      const mine = new Map(render(target).map((o) => [key(o), o]));
      const real = new Map(theirs.map((o) => [key(o), o]));
      assert.deepEqual([...mine.keys()].sort(), [...real.keys()].sort());
      for (const [k, o] of real) {
        assert.ok(
          isDeepStrictEqual(mine.get(k), o),
          `${k} differs:\n${YAML.stringify(o)}\nvs\n${YAML.stringify(mine.get(k))}`,
        );
      }
    });
  }
});

describe('k8s: pods', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: every container has CPU and memory requests and a memory limit`, () => {
      for (const w of workloads(render(target))) {
        for (const c of containersOf(w)) {
          const r = c.resources ?? {};
          assert.ok(r.requests?.cpu, `${id(w)}/${c.name}: requests.cpu`);
          assert.ok(r.requests?.memory, `${id(w)}/${c.name}: requests.memory`);
          assert.ok(r.limits?.memory, `${id(w)}/${c.name}: limits.memory`);
        }
      }
    });

    it(`${target}: every pod runs as non-root on a read-only root filesystem, no privilege, no capability`, () => {
      for (const w of workloads(render(target))) {
        const pod = podSpec(w);
        assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${id(w)}: seccomp RuntimeDefault`);
        assert.equal(pod.automountServiceAccountToken, false, `${id(w)}: no service account token`);
        for (const c of containersOf(w)) {
          const sc = c.securityContext ?? {};
          const where = `${id(w)}/${c.name}`;
          assert.equal(sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, true, `${where}: runAsNonRoot`);
          const uid = sc.runAsUser ?? pod.securityContext?.runAsUser;
          assert.ok(Number.isInteger(uid) && uid > 0, `${where}: a numeric non-zero runAsUser`);
          assert.equal(sc.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
          assert.equal(sc.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation false`);
          assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${where}: drops ALL capabilities`);
          assert.equal(sc.privileged ?? false, false, `${where}: not privileged`);
        }
      }
    });

    it(`${target}: Triage containers run as the image's uid 10001 with a writable /tmp only (and /data for batch)`, () => {
      for (const { workload, container } of triageContainers(render(target))) {
        const pod = podSpec(workload);
        assert.equal(container.securityContext?.runAsUser ?? pod.securityContext?.runAsUser, 10001);
        const writable = (container.volumeMounts ?? [])
          .filter((m: Obj) => m.readOnly !== true)
          .map((m: Obj) => m.mountPath);
        const expected = workerKindOf(workload) === 'batch' ? ['/data', '/tmp'] : ['/tmp'];
        assert.deepEqual(writable.sort(), expected, `${id(workload)}: writable mounts`);
        const tmp = pod.volumes.find(
          (v: Obj) => v.name === container.volumeMounts.find((m: Obj) => m.mountPath === '/tmp').name,
        );
        assert.ok(tmp?.emptyDir, `${id(workload)}: /tmp is an emptyDir`);
      }
    });
  }
});

describe('k8s: the gateway', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: readiness on /readyz, liveness and startup on /healthz, on the port it listens on`, () => {
      const objects = render(target);
      const w = gateway(objects);
      const [c, ...others] = podSpec(w).containers as Obj[];
      assert.equal(others.length, 0, 'one container');
      const port = Number(containerEnv(objects, c as Obj).TRIAGE_PORT ?? 8080);
      const named = (c as Obj).ports.find((p: Obj) => p.containerPort === port);
      assert.ok(named, `a container port ${port} (TRIAGE_PORT)`);
      for (const [probe, route] of [
        ['readinessProbe', '/readyz'],
        ['livenessProbe', '/healthz'],
        ['startupProbe', '/healthz'],
      ] as const) {
        const p = (c as Obj)[probe];
        assert.equal(p?.httpGet?.path, route, `${probe} on ${route}`);
        assert.ok(p.httpGet.port === port || p.httpGet.port === named.name, `${probe} on port ${port}`);
      }
      // the ops endpoints must stay open to the kubelet: with TRIAGE_OPEN_OPS_ENDPOINTS=false they need an admin key
      assert.notEqual(triageConfigMap(objects).TRIAGE_OPEN_OPS_ENDPOINTS, 'false');
    });

    it(`${target}: runs no workers, and drains inside the grace period after the preStop pause`, () => {
      const objects = render(target);
      const w = gateway(objects);
      const c = podSpec(w).containers[0] as Obj;
      const env = containerEnv(objects, c);
      assert.equal(env.TRIAGE_WORKERS, 'none', 'workers run in their own Deployments');
      const preStop = c.lifecycle?.preStop?.exec?.command as string[] | undefined;
      assert.ok(preStop && preStop[0] === 'sleep', 'a preStop sleep so endpoints are removed before the drain');
      const pauseMs = Number(preStop[1]) * 1000;
      assert.ok(pauseMs >= 3000, 'a pause of a few seconds');
      const drainMs = Number(env.TRIAGE_SHUTDOWN_GRACE_MS ?? 10_000);
      const graceMs = podSpec(w).terminationGracePeriodSeconds * 1000;
      assert.ok(
        graceMs >= pauseMs + drainMs + 5000,
        `terminationGracePeriodSeconds (${graceMs} ms) ≥ preStop (${pauseMs}) + TRIAGE_SHUTDOWN_GRACE_MS (${drainMs}) + 5 s to close`,
      );
      assert.equal(w.spec.strategy?.rollingUpdate?.maxUnavailable, 0, 'rolling updates keep every ready gateway');
    });

    it(`${target}: the HPA's CPU target is reachable by one event loop (request × target ≤ 0.8 core)`, () => {
      const objects = render(target);
      const w = gateway(objects);
      const hpa = ofKind(objects, 'HorizontalPodAutoscaler').find(
        (h) => h.spec.scaleTargetRef.name === w.metadata.name,
      ) as Obj;
      const metric = (hpa.spec.metrics as Obj[]).find((m) => m.resource?.name === 'cpu') as Obj;
      assert.equal(metric.resource.target.type, 'Utilization');
      const request = cores((podSpec(w).containers[0] as Obj).resources.requests.cpu);
      const at = (request * metric.resource.target.averageUtilization) / 100;
      // a saturated gateway (one event loop, onnxruntime on one intra-op thread) uses about one core: a target above
      // that never fires, and one near it fires only once the gateway already sheds
      assert.ok(at <= 0.8, `scales out at ${at} cores of a ${request}-core request: one gateway never gets there`);
    });

    it(`${target}: a Service, an HPA on CPU, a PodDisruptionBudget and a ServiceMonitor on /metrics`, () => {
      const objects = render(target);
      const w = gateway(objects);
      const labels = w.spec.template.metadata.labels;
      const services = ofKind(objects, 'Service').filter((s) => selects(s.spec.selector, labels));
      assert.equal(services.length, 1, 'one Service selects the gateway');
      const hpa = ofKind(objects, 'HorizontalPodAutoscaler').find(
        (h) => h.spec.scaleTargetRef.name === w.metadata.name,
      );
      assert.ok(hpa, 'an HPA');
      assert.ok(
        hpa.spec.metrics.some((m: Obj) => m.resource?.name === 'cpu'),
        'scaled on CPU',
      );
      assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas > hpa.spec.minReplicas);
      assert.equal(w.spec.replicas, undefined, 'no replicas in the Deployment: the HPA owns them');
      const pdb = ofKind(objects, 'PodDisruptionBudget').find((p) => selects(p.spec.selector.matchLabels, labels));
      assert.ok(pdb, 'a PodDisruptionBudget');
      if (pdb.spec.minAvailable !== undefined) {
        assert.ok(pdb.spec.minAvailable < hpa.spec.minReplicas, 'the PDB lets a node drain evict one gateway');
      }
      const sm = ofKind(objects, 'ServiceMonitor').find((m) =>
        selects(m.spec.selector.matchLabels, services[0]?.metadata.labels),
      );
      assert.ok(sm, 'a ServiceMonitor selects the Service');
      const endpoint = sm.spec.endpoints[0];
      assert.equal(endpoint.path, '/metrics');
      assert.ok(
        services[0]?.spec.ports.some((p: Obj) => p.name === endpoint.port),
        'the ServiceMonitor port is a named Service port',
      );
    });
  }
});

describe('k8s: workers', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: each worker has startup and liveness probes on /healthz at TRIAGE_WORKER_METRICS_PORT`, () => {
      const objects = render(target);
      for (const { workload, container } of triageContainers(objects)) {
        if (workerKindOf(workload) === undefined) continue;
        const port = Number(containerEnv(objects, container).TRIAGE_WORKER_METRICS_PORT ?? 9464);
        const named = (container.ports ?? []).find((p: Obj) => p.containerPort === port);
        assert.ok(named, `${id(workload)}: a container port ${port}`);
        for (const probe of ['startupProbe', 'livenessProbe']) {
          const p = container[probe];
          assert.equal(p?.httpGet?.path, '/healthz', `${id(workload)}: ${probe} on /healthz`);
          assert.ok(p.httpGet.port === port || p.httpGet.port === named.name, `${id(workload)}: ${probe} port`);
          // /healthz waits up to 1 s for Redis's PING (workers/ops.ts): the probe must wait longer
          assert.ok((p.timeoutSeconds ?? 1) > 1, `${id(workload)}: ${probe} timeoutSeconds > 1`);
        }
        const startup = container.startupProbe;
        assert.ok(
          (startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3) >= 60,
          `${id(workload)}: the startup probe allows a minute or more to load the models`,
        );
        assert.equal(container.readinessProbe, undefined, `${id(workload)}: takes no traffic, so no readiness`);
      }
    });

    it(`${target}: one Deployment per worker kind of workers/index.ts, each running dist/workers/main.js <kind>`, () => {
      const objects = render(target);
      const byKind = new Map<string, Obj[]>();
      for (const { workload, container } of triageContainers(objects)) {
        if (container.command.at(-1) !== 'dist/workers/main.js') continue;
        assert.equal(container.args?.length, 1, `${id(workload)}: one kind argument`);
        const kind = container.args[0] as string;
        assert.ok((workerKinds as readonly string[]).includes(kind), `${id(workload)}: "${kind}" is a worker kind`);
        assert.equal(workerKindOf(workload), kind, `${id(workload)}: labelled triage/worker-kind=${kind}`);
        byKind.set(kind, [...(byKind.get(kind) ?? []), workload]);
      }
      for (const kind of workerKinds) {
        assert.equal(
          byKind.get(kind)?.length,
          1,
          `one Deployment for worker kind "${kind}" (k8s/base/workers/${kind}.yaml)`,
        );
      }
    });

    it(`${target}: queue-driven workers scale with KEDA on their BullMQ wait list; nothing is scaled twice`, () => {
      const objects = render(target);
      const prefix = triageConfigMap(objects).TRIAGE_REDIS_PREFIX ?? '{triage}';
      const scaled = new Map<string, string>();
      for (const h of ofKind(objects, 'HorizontalPodAutoscaler')) {
        assert.ok(find(objects, h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name), `${id(h)}: its target exists`);
        assert.ok(!scaled.has(h.spec.scaleTargetRef.name), `${h.spec.scaleTargetRef.name} scaled twice`);
        scaled.set(h.spec.scaleTargetRef.name, id(h));
      }
      for (const so of ofKind(objects, 'ScaledObject')) {
        const ref = so.spec.scaleTargetRef;
        const w = find(objects, ref.kind ?? 'Deployment', ref.name);
        assert.ok(w, `${id(so)}: its target ${ref.name} exists`);
        assert.ok(!scaled.has(ref.name), `${ref.name} scaled twice`);
        scaled.set(ref.name, id(so));
        assert.equal(w.spec.replicas, undefined, `${ref.name}: no replicas, KEDA owns them`);
        const kind = workerKindOf(w) as WorkerKind;
        const queue = QUEUE_OF[kind];
        assert.ok(queue, `${id(so)}: worker kind "${kind}" has no queue in QUEUE_OF`);
        assert.ok(so.spec.minReplicaCount >= 1, `${id(so)}: keeps a replica (jobs should not wait for a cold start)`);
        const triggers = so.spec.triggers as Obj[];
        if (SHARDED_QUEUES.has(queue)) {
          // one wait list per model shard ({<base>:<model>}:<queue>:wait, src/platform/keyspace.ts), scaled on their sum
          const base = prefix.replace(/^\{(.*)\}$/, '$1');
          assert.deepEqual(
            triggers.map((t) => t.metadata.listName).sort(),
            BUNDLED_MODELS.map((m) => `{${base}:${m}}:${queue}:wait`).sort(),
            `${id(so)}: a trigger on each bundled model's shard`,
          );
          const names = triggers.map((t) => t.name as string);
          assert.deepEqual(
            so.spec.advanced.scalingModifiers.formula
              .split('+')
              .map((n: string) => n.trim())
              .sort(),
            [...names].sort(),
            `${id(so)}: scaled on the sum of its shards' wait lists`,
          );
        } else {
          assert.equal(triggers.length, 1);
          assert.equal(triggers[0]?.metadata.listName, `${prefix}:${queue}:wait`);
        }
        const cluster = CLUSTER_TARGETS.includes(target);
        for (const trigger of triggers) {
          // a shard's list is on the primary serving its slot: on a cluster the scaler must follow the slot map
          assert.equal(trigger.type, cluster ? 'redis-cluster' : 'redis', 'the KEDA redis (list length) scaler');
          assert.ok(Number(trigger.metadata.listLength) >= 1);
          const address = cluster ? 'addressesFromEnv' : 'addressFromEnv';
          assert.ok(trigger.metadata[address], `${id(so)}: ${trigger.name ?? 'its trigger'} reads ${address}`);
          assert.equal(trigger.metadata[cluster ? 'addressFromEnv' : 'addressesFromEnv'], undefined);
        }
        const trigger = triggers[0] as Obj;
        // KEDA resolves these from the target container's environment: they must be there (operator Secret in prod)
        const container = podSpec(w).containers[0] as Obj;
        const address = trigger.metadata.addressFromEnv ?? trigger.metadata.addressesFromEnv;
        for (const v of [address, trigger.metadata.passwordFromEnv]) {
          const fromSecret = (container.envFrom ?? []).some(
            (e: Obj) => e.secretRef && (OPERATOR_SECRET_KEYS[e.secretRef.name]?.includes(v) ?? false),
          );
          assert.ok(
            v in containerEnv(objects, container) || fromSecret,
            `${id(so)}: ${v} is in ${ref.name}'s environment`,
          );
        }
      }
      for (const [kind, queue] of Object.entries(QUEUE_OF)) {
        const w = workloads(objects).find((o) => workerKindOf(o) === kind);
        assert.ok(w && scaled.has(w.metadata.name), `the ${kind} worker (queue ${queue}) is autoscaled`);
      }
    });
  }

  it("BullMQ keeps a queue's waiting jobs in a Redis LIST <prefix>:<queue>:wait (what KEDA's redis scaler reads)", async () => {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const prefix = `{triage-k8s-test-${randomBytes(4).toString('hex')}}`;
    const queue = new Queue(INFERENCE_QUEUE, { connection: redis, prefix });
    try {
      await queue.add('infer', { jobId: 'x' });
      await queue.add('infer', { jobId: 'y' });
      const key = `${prefix}:${INFERENCE_QUEUE}:wait`;
      assert.equal(await redis.type(key), 'list');
      assert.equal(await redis.llen(key), 2);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      await redis.quit();
    }
  });
});

describe('k8s: references and selectors', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: every ConfigMap, Secret (and key), PVC and ServiceAccount a pod uses exists or is the operator's`, () => {
      const objects = render(target);
      const provided = PROVIDED_BY_OPERATOR[target];
      const check = (
        kind: 'ConfigMap' | 'Secret' | 'PersistentVolumeClaim',
        name: string,
        where: string,
        key?: string,
      ) => {
        const o = find(objects, kind, name);
        if (!o) {
          assert.ok(
            provided[kind]?.includes(name),
            `${where}: ${kind} ${name} is neither rendered nor provided by the operator`,
          );
          if (key !== undefined && kind === 'Secret') {
            assert.ok(OPERATOR_SECRET_KEYS[name]?.includes(key), `${where}: ${name} has no documented key ${key}`);
          }
          return;
        }
        if (key !== undefined) assert.ok(key in (o.data ?? {}), `${where}: ${kind} ${name} has no key ${key}`);
      };
      for (const w of workloads(objects)) {
        const pod = podSpec(w);
        const where = id(w);
        if (pod.serviceAccountName) {
          assert.ok(
            find(objects, 'ServiceAccount', pod.serviceAccountName),
            `${where}: ServiceAccount ${pod.serviceAccountName}`,
          );
        }
        const claims = new Set((w.spec.volumeClaimTemplates ?? []).map((t: Obj) => t.metadata.name));
        for (const v of pod.volumes ?? []) {
          if (v.secret) check('Secret', v.secret.secretName, where);
          if (v.configMap) check('ConfigMap', v.configMap.name, where);
          if (v.persistentVolumeClaim) check('PersistentVolumeClaim', v.persistentVolumeClaim.claimName, where);
        }
        for (const c of containersOf(w)) {
          for (const e of c.envFrom ?? []) {
            if (e.configMapRef) check('ConfigMap', e.configMapRef.name, where);
            if (e.secretRef) check('Secret', e.secretRef.name, where);
          }
          for (const e of c.env ?? []) {
            if (e.valueFrom?.configMapKeyRef)
              check('ConfigMap', e.valueFrom.configMapKeyRef.name, where, e.valueFrom.configMapKeyRef.key);
            if (e.valueFrom?.secretKeyRef)
              check('Secret', e.valueFrom.secretKeyRef.name, where, e.valueFrom.secretKeyRef.key);
          }
          for (const m of c.volumeMounts ?? []) {
            assert.ok(
              (pod.volumes ?? []).some((v: Obj) => v.name === m.name) || claims.has(m.name),
              `${where}/${c.name}: volume ${m.name} is defined`,
            );
          }
        }
        if (w.kind === 'StatefulSet') {
          assert.ok(find(objects, 'Service', w.spec.serviceName), `${where}: its serviceName Service exists`);
        }
      }
    });

    it(`${target}: the API keys file is mounted where TRIAGE_API_KEYS_FILE points`, () => {
      const objects = render(target);
      for (const { workload, container } of triageContainers(objects)) {
        const file = containerEnv(objects, container).TRIAGE_API_KEYS_FILE;
        assert.ok(file, `${id(workload)}: TRIAGE_API_KEYS_FILE`);
        const mount = (container.volumeMounts as Obj[]).find((m) => m.mountPath === path.posix.dirname(file));
        assert.ok(mount?.readOnly, `${id(workload)}: ${path.posix.dirname(file)} is a read-only mount`);
        const volume = podSpec(workload).volumes.find((v: Obj) => v.name === mount.name);
        assert.ok(volume?.secret, `${id(workload)}: the keys come from a Secret`);
        const secret = find(objects, 'Secret', volume.secret.secretName);
        const keyName = path.posix.basename(file);
        if (secret) assert.ok(keyName in secret.data, `Secret ${secret.metadata.name} has ${keyName}`);
        else assert.ok(OPERATOR_SECRET_KEYS[volume.secret.secretName]?.includes(keyName));
      }
    });

    it(`${target}: selectors select their own pods; Services, PDBs and NetworkPolicies select existing pods`, () => {
      const objects = render(target);
      const podLabels = workloads(objects).map((w) => w.spec.template.metadata.labels as Record<string, string>);
      for (const w of workloads(objects)) {
        assert.ok(
          selects(w.spec.selector.matchLabels, w.spec.template.metadata.labels),
          `${id(w)}: selector ⊆ template labels`,
        );
        for (const other of workloads(objects)) {
          if (other !== w) {
            assert.ok(
              !selects(w.spec.selector.matchLabels, other.spec.template.metadata.labels),
              `${id(w)}'s selector also selects ${id(other)}'s pods`,
            );
          }
        }
      }
      for (const s of ofKind(objects, 'Service')) {
        const backends = workloads(objects).filter((w) => selects(s.spec.selector, w.spec.template.metadata.labels));
        assert.ok(backends.length > 0, `${id(s)} selects a workload`);
        for (const p of s.spec.ports) {
          if (typeof p.targetPort !== 'string') continue;
          const named = backends.every((w) =>
            containersOf(w).some((c) => (c.ports ?? []).some((cp: Obj) => cp.name === p.targetPort)),
          );
          assert.ok(named, `${id(s)}: targetPort ${p.targetPort} is a named container port`);
        }
      }
      for (const pdb of ofKind(objects, 'PodDisruptionBudget')) {
        assert.ok(
          podLabels.some((l) => selects(pdb.spec.selector.matchLabels, l)),
          `${id(pdb)} selects pods`,
        );
      }
      for (const np of ofKind(objects, 'NetworkPolicy')) {
        const sel = np.spec.podSelector.matchLabels;
        if (sel === undefined) continue; // {}: every pod of the namespace
        assert.ok(
          podLabels.some((l) => selects(sel, l)),
          `${id(np)} selects pods`,
        );
      }
    });

    it(`${target}: one image for every Triage container, pinned`, () => {
      const objects = render(target);
      const images = new Set(triageContainers(objects).map(({ container }) => container.image as string));
      assert.equal(images.size, 1, `one image: ${[...images].join(', ')}`);
      const [image] = [...images] as [string];
      assert.ok(image.endsWith(':dev') || /:\d+\.\d+\.\d+$|@sha256:/.test(image), `${image}: a version tag or digest`);
      assert.ok(!image.endsWith(':latest'));
      if (PROD_TARGETS.includes(target)) assert.ok(imageName(image).includes('/'), 'prod pulls from a registry');
    });
  }
});

describe('k8s: commands and config', () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };

  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: each command is node <the compiled form of an entry point>; the gateway's is \`npm start\``, () => {
      const objects = render(target);
      for (const { workload, container } of triageContainers(objects)) {
        const [node, script, ...rest] = container.command as string[];
        assert.equal(node, 'node', `${id(workload)}: no loader (the image has no tsx)`);
        assert.equal(rest.length, 0);
        const m = /^dist\/(.+)\.js$/.exec(script ?? '');
        assert.ok(m, `${id(workload)}: ${script} is compiled output under dist/`);
        assert.ok(existsSync(path.join(ROOT, `${m[1]}.ts`)), `${id(workload)}: ${m[1]}.ts exists in the repo`);
      }
      const g = gateway(objects);
      assert.equal((podSpec(g).containers[0] as Obj).command.join(' '), pkg.scripts.start);
    });

    it(`${target}: every TRIAGE_* variable set is one src/platform/config.ts reads, and the config loads in production mode`, () => {
      const objects = render(target);
      const source = readFileSync(path.join(ROOT, 'src/platform/config.ts'), 'utf8');
      const dir = mkdtempSync(path.join(tmpdir(), 'triage-k8s-'));
      try {
        for (const { workload, container } of triageContainers(objects)) {
          const env = containerEnv(objects, container);
          for (const name of Object.keys(env).filter((k) => k.startsWith('TRIAGE_'))) {
            const variable = name.endsWith('_FILE') ? name.slice(0, -'_FILE'.length) : name;
            assert.ok(
              source.includes(`${variable}:`),
              `${id(workload)}: ${name} is not a variable of src/platform/config.ts`,
            );
          }
          assert.equal(
            env.TRIAGE_ENV,
            'production',
            `${id(workload)}: production mode (keys required, all interfaces)`,
          );
          // the keys file: the rendered Secret when there is one (dev), else a stand-in for the operator's
          const volume = podSpec(workload).volumes.find((v: Obj) =>
            v.secret?.secretName?.startsWith('triage-api-keys'),
          );
          const secret = find(objects, 'Secret', volume.secret.secretName);
          const keysFile = path.join(dir, 'keys.yaml');
          writeFileSync(
            keysFile,
            secret
              ? (dataOf(secret)['keys.yaml'] ?? '')
              : `keys: [{id: x, role: admin, sha256: "${'0'.repeat(64)}"}]\n`,
          );
          const config = loadConfig({
            ...env,
            TRIAGE_API_KEYS_FILE: keysFile,
            TRIAGE_REDIS_URL:
              env.TRIAGE_REDIS_URL ??
              (CLUSTER_TARGETS.includes(target)
                ? 'rediss-cluster://operator-secret-1.example:6380,operator-secret-2.example:6380'
                : 'rediss://operator-secret.example:6380'),
          });
          assert.equal(config.env, 'production');
          assert.equal(config.host, '0.0.0.0');
          assert.equal(config.dataDir, '/data');
          if (config.apiKeys) ApiKeyStore.parse(config.apiKeys);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe('k8s: network policy', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: default deny; DNS and Redis for every Triage pod; the gateway port in; 443 out for callbacks and, where cloud versions are, for the scoring pods`, () => {
      const objects = render(target);
      const policies = ofKind(objects, 'NetworkPolicy');
      const applying = (labels: Record<string, string>, type: 'Ingress' | 'Egress') =>
        policies.filter(
          (p) =>
            p.spec.policyTypes.includes(type) &&
            (p.spec.podSelector.matchLabels === undefined || selects(p.spec.podSelector.matchLabels, labels)),
        );
      assert.ok(
        policies.some((p) => Object.keys(p.spec.podSelector).length === 0 && !p.spec.ingress && !p.spec.egress),
        'a default-deny policy',
      );
      const egressPorts = (labels: Record<string, string>) =>
        applying(labels, 'Egress').flatMap((p) =>
          (p.spec.egress ?? []).flatMap((r: Obj) => r.ports ?? []).map((x: Obj) => x.port),
        );
      for (const { workload } of triageContainers(objects)) {
        const labels = workload.spec.template.metadata.labels;
        const ports = egressPorts(labels);
        assert.ok(ports.includes(53), `${id(workload)}: DNS`);
        assert.ok(ports.includes(6379), `${id(workload)}: Redis`);
        const kind = workerKindOf(workload) as WorkerKind | undefined;
        const scores = workload === gateway(objects) || (kind !== undefined && SCORING_WORKER_KINDS.includes(kind));
        const cloud = CLOUD_TARGETS.includes(target) || bundledCloudVersions().length > 0;
        assert.equal(
          ports.includes(443),
          kind === 'callbacks' || (scores && cloud),
          `${id(workload)}: 443 out ${kind === 'callbacks' ? 'for callbacks' : scores && cloud ? 'to the cloud runtimes' : 'for nobody else'}`,
        );
        const ingress = applying(labels, 'Ingress').flatMap((p) => p.spec.ingress ?? []);
        if (workload === gateway(objects)) {
          assert.ok(
            ingress.some((r: Obj) => r.ports?.some((p: Obj) => p.port === 8080)),
            'the gateway takes 8080',
          );
        } else {
          // workers serve only their metrics port (Prometheus, liveness)
          assert.deepEqual(
            ingress.flatMap((r: Obj) => (r.ports ?? []).map((p: Obj) => p.port)),
            [9464],
            `${id(workload)}: only the metrics port in`,
          );
        }
      }
    });
  }
});

describe('k8s: monitoring', () => {
  for (const target of Object.keys(TARGETS) as Target[]) {
    it(`${target}: the ServiceMonitor and the PodMonitor carry the labels a Prometheus Operator selects`, () => {
      const objects = render(target);
      const monitors = [...ofKind(objects, 'ServiceMonitor'), ...ofKind(objects, 'PodMonitor')];
      assert.deepEqual(monitors.map((m) => m.kind).sort(), ['PodMonitor', 'ServiceMonitor']);
      for (const m of monitors) {
        assert.ok(
          selects(MONITOR_SELECTOR, m.metadata.labels),
          `${id(m)}: labelled ${JSON.stringify(MONITOR_SELECTOR)}`,
        );
      }
      const pm = ofKind(objects, 'PodMonitor')[0] as Obj;
      const workers = workloads(objects).filter((w) => workerKindOf(w) !== undefined);
      for (const w of workers) {
        assert.ok(selects(pm.spec.selector.matchLabels, w.spec.template.metadata.labels), `${id(pm)} selects ${id(w)}`);
        const ports = containersOf(w).flatMap((c) => (c.ports ?? []).map((p: Obj) => p.name));
        assert.ok(ports.includes(pm.spec.podMetricsEndpoints[0].port), `${id(w)} names the PodMonitor's port`);
      }
    });
  }

  it('k8s/README.md says which label selects the monitors', () => {
    const readme = readFileSync(path.join(ROOT, 'k8s/README.md'), 'utf8');
    for (const [k, v] of Object.entries(MONITOR_SELECTOR)) assert.ok(readme.includes(`${k}: ${v}`), `${k}: ${v}`);
  });
});

describe('k8s: dev overlay', () => {
  it('has its own Redis: AOF, noeviction, the password of the dev Secret, reachable by Triage pods and KEDA', () => {
    const objects = render('dev');
    const redis = ofKind(objects, 'StatefulSet').find((s) => s.metadata.name === 'redis');
    assert.ok(redis);
    const c = podSpec(redis).containers[0] as Obj;
    const args = (c.args as string[]).join(' ');
    assert.match(args, /--appendonly yes/);
    assert.match(args, /--maxmemory-policy noeviction/);
    assert.match(args, /--requirepass \$\(REDIS_PASSWORD\)/);
    assert.ok(redis.spec.volumeClaimTemplates?.[0], 'AOF on a persistent volume');
    const ns = redis.metadata.namespace as string;
    const service = find(objects, 'Service', redis.spec.serviceName) as Obj;
    const host = `${service.metadata.name}.${ns}.svc.cluster.local`;
    const env = containerEnv(objects, podSpec(gateway(objects)).containers[0] as Obj);
    const password = containerEnv(objects, c).REDIS_PASSWORD;
    assert.ok(password);
    const url = new URL(env.TRIAGE_REDIS_URL as string);
    assert.equal(url.hostname, host, 'TRIAGE_REDIS_URL names the dev Redis Service in this namespace');
    assert.equal(decodeURIComponent(url.password), password);
    assert.equal(env.KEDA_REDIS_ADDRESS, `${host}:6379`, 'KEDA (another namespace) gets the full name');
    assert.equal(env.KEDA_REDIS_PASSWORD, password);
    const np = ofKind(objects, 'NetworkPolicy').find((p) =>
      selects(p.spec.podSelector.matchLabels, redis.spec.template.metadata.labels),
    );
    const from = (np?.spec.ingress?.[0]?.from ?? []) as Obj[];
    assert.ok(
      from.some((f) => f.podSelector?.matchLabels?.['app.kubernetes.io/name'] === 'triage'),
      'Triage pods reach Redis',
    );
    assert.ok(
      from.some((f) => f.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'] === 'keda'),
      'KEDA reaches Redis',
    );
  });

  it('its API keys are the published, not-secret dev keys, with the roles the k6 scripts need', () => {
    const objects = render('dev');
    const secret = ofKind(objects, 'Secret').find((s) => s.metadata.name.startsWith('triage-api-keys')) as Obj;
    const text = dataOf(secret)['keys.yaml'] as string;
    assert.match(text, /DEVELOPMENT ONLY: NOT SECRET/);
    const store = ApiKeyStore.parse(text);
    for (const [role, key] of Object.entries(DEV_KEYS)) assert.equal(store.authenticate(key)?.role, role);
    const readme = readFileSync(path.join(ROOT, 'k8s/README.md'), 'utf8');
    for (const key of Object.values(DEV_KEYS)) assert.ok(readme.includes(key), `k8s/README.md publishes ${key}`);
    const client = store.authenticate(DEV_KEYS.client);
    const receiverHost = triageConfigMap(objects).TRIAGE_CALLBACK_HTTP_HOSTS;
    assert.ok(
      receiverHost && client?.callbackHosts.includes(receiverHost),
      'the dev client may call back the receiver',
    );
  });
});

describe('k8s: prod overlay', () => {
  for (const target of PROD_TARGETS) {
    it(`${target}: commits no secret: no Secret objects, no generated secrets; Redis over TLS`, () => {
      const objects = render(target);
      assert.equal(ofKind(objects, 'Secret').length, 0);
      const kustomization = YAML.parse(readFileSync(path.join(ROOT, TARGETS[target], 'kustomization.yaml'), 'utf8'));
      assert.equal(kustomization.secretGenerator, undefined);
      assert.equal(
        triageConfigMap(objects).TRIAGE_REDIS_URL,
        undefined,
        'the Redis URL (with its password) is a Secret',
      );
      for (const so of ofKind(objects, 'ScaledObject')) {
        for (const t of so.spec.triggers)
          assert.equal(t.metadata.enableTLS, 'true', `${id(so)}: ${t.name ?? 'trigger'}`);
      }
      const hpa = ofKind(objects, 'HorizontalPodAutoscaler')[0] as Obj;
      assert.ok(hpa.spec.minReplicas >= 3, 'at least three gateways');
    });
  }

  it('k8s/README.md documents every operator-provided object and Secret key', () => {
    const readme = readFileSync(path.join(ROOT, 'k8s/README.md'), 'utf8');
    for (const [kind, names] of Object.entries(PROVIDED_BY_OPERATOR.prod)) {
      for (const name of names ?? []) assert.ok(readme.includes(name), `README names ${kind} ${name}`);
    }
    for (const keys of Object.values(OPERATOR_SECRET_KEYS))
      for (const k of keys) assert.ok(readme.includes(k), `README names ${k}`);
  });
});

describe('k8s: tree', () => {
  it('every worker kind has its own small file under k8s/base/workers, listed in the base', () => {
    const kustomization = YAML.parse(
      readFileSync(path.join(ROOT, 'k8s/base/kustomization.yaml'), 'utf8'),
    ) as JsonObject;
    for (const kind of workerKinds) {
      assert.ok((kustomization.resources as string[]).includes(`workers/${kind}.yaml`), `workers/${kind}.yaml listed`);
    }
  });
});
