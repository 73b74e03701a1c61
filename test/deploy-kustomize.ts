/**
 * A small kustomize renderer for the tests of k8s/: CI has no cluster and may have no kustomize binary, so the
 * manifests are rendered here, in process, for the subset of kustomize that k8s/ uses and nothing more:
 *
 * - `resources` (YAML files, multi-document, and directories holding a kustomization.yaml);
 * - `namespace` (set on every namespaced object);
 * - `labels` (`pairs`, `includeTemplates`; `includeSelectors` must be false);
 * - `images` (`name`, `newName`, `newTag`, `digest`) on every `containers`/`initContainers` list;
 * - `patches`: strategic merge from `path` or inline `patch` (matched by kind and name, or applied to every object a
 *   `target` selects), JSON 6902 (add, replace, remove) inline with a `target`;
 * - `configMapGenerator` / `secretGenerator` (`envs`, `files`, `literals`, `behavior` create/merge/replace, `type`),
 *   with kustomize's content-hash name suffix and the references to those names rewritten in pod specs.
 *
 * Anything outside that subset throws, so k8s/ cannot drift into what this renderer would silently get wrong. Where a
 * real `kubectl kustomize` is on PATH, test/deploy-k8s.test.ts renders with both and requires the same objects.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface K8sObject extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: JsonObject & { name: string; namespace?: string; labels?: { [key: string]: string } };
}

interface Item {
  obj: K8sObject;
  /** set on ConfigMaps and Secrets made by a generator: their name gets the content hash at the end */
  generated?: boolean;
}

const KUSTOMIZATION_KEYS = new Set([
  'apiVersion',
  'kind',
  'namespace',
  'resources',
  'labels',
  'images',
  'patches',
  'configMapGenerator',
  'secretGenerator',
]);

/** Kinds this tree may contain that are cluster-scoped (the namespace transformer leaves them alone). */
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);

/** Workload kinds and where their pod template sits. */
const POD_TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

/** Strategic-merge keys of the lists inside a pod spec (Kubernetes' patchMergeKey); other lists are replaced. */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  ports: 'containerPort',
  imagePullSecrets: 'name',
};

const BUILTIN_GROUPS = new Set(['v1', 'apps/v1', 'batch/v1', 'autoscaling/v2', 'policy/v1', 'networking.k8s.io/v1']);

export class KustomizeError extends Error {
  override name = 'KustomizeError';
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function parseDocs(text: string, file: string): K8sObject[] {
  const docs = YAML.parseAllDocuments(text);
  const out: K8sObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new KustomizeError(`${file}: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) continue;
    if (!isObject(value) || typeof value.kind !== 'string' || typeof value.apiVersion !== 'string') {
      throw new KustomizeError(`${file}: every document must be an object with apiVersion and kind`);
    }
    const metadata = value.metadata;
    if (!isObject(metadata) || typeof metadata.name !== 'string') {
      throw new KustomizeError(`${file}: a ${value.kind} without metadata.name`);
    }
    out.push(value as K8sObject);
  }
  return out;
}

function readKustomization(dir: string): JsonObject {
  for (const name of ['kustomization.yaml', 'kustomization.yml', 'Kustomization']) {
    const file = path.join(dir, name);
    if (existsSync(file)) {
      const k = YAML.parse(readFileSync(file, 'utf8')) as unknown;
      if (!isObject(k)) throw new KustomizeError(`${file}: not a mapping`);
      for (const key of Object.keys(k)) {
        if (!KUSTOMIZATION_KEYS.has(key)) {
          throw new KustomizeError(
            `${file}: "${key}" is outside the kustomize subset test/deploy-kustomize.ts renders`,
          );
        }
      }
      return k;
    }
  }
  throw new KustomizeError(`${dir}: no kustomization.yaml`);
}

/** A file a kustomization names must stay inside its directory (kustomize's default load restrictor). */
function within(dir: string, rel: string, what: string): string {
  const file = path.resolve(dir, rel);
  const relative = path.relative(dir, file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) {
    throw new KustomizeError(`${dir}: ${what} "${rel}" is outside the kustomization's directory`);
  }
  return file;
}

function strings(v: Json | undefined, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new KustomizeError(`${what} must be a list`);
  return v as string[];
}

// ---- generators ------------------------------------------------------------------------------------------------------

function splitKeyValue(line: string, what: string): [string, string] {
  const eq = line.indexOf('=');
  if (eq <= 0) throw new KustomizeError(`${what}: "${line}" is not KEY=VALUE`);
  return [line.slice(0, eq).trim(), line.slice(eq + 1)];
}

function generatorData(dir: string, g: JsonObject, what: string): Record<string, string> {
  const data: Record<string, string> = {};
  const put = (key: string, value: string) => {
    if (key in data) throw new KustomizeError(`${what}: key ${key} given twice`);
    data[key] = value;
  };
  for (const envFile of strings(g.envs, `${what}.envs`)) {
    const text = readFileSync(within(dir, envFile, 'env file'), 'utf8');
    for (const raw of text.split(/\r?\n/)) {
      const line = raw.trimStart();
      if (line === '' || line.startsWith('#')) continue;
      put(...splitKeyValue(line, `${what} ${envFile}`));
    }
  }
  for (const spec of strings(g.files, `${what}.files`)) {
    const eq = spec.indexOf('=');
    const [key, file] = eq > 0 ? [spec.slice(0, eq), spec.slice(eq + 1)] : [path.basename(spec), spec];
    put(key, readFileSync(within(dir, file, 'file'), 'utf8'));
  }
  for (const literal of strings(g.literals, `${what}.literals`)) put(...splitKeyValue(literal, what));
  return data;
}

/** Secret data as kustomize writes it: base64 in lines of 70, each ending in a newline, once it reaches 70. */
function base64Lines(value: string): string {
  const encoded = Buffer.from(value).toString('base64');
  if (encoded.length < 70) return encoded;
  let out = '';
  for (let i = 0; i < encoded.length; i += 70) out += `${encoded.slice(i, i + 70)}\n`;
  return out;
}

function applyGenerators(dir: string, k: JsonObject, items: Item[]) {
  const kinds = [
    ['configMapGenerator', 'ConfigMap'],
    ['secretGenerator', 'Secret'],
  ] as const;
  for (const [field, kind] of kinds) {
    const gens = k[field];
    if (gens === undefined) continue;
    if (!Array.isArray(gens)) throw new KustomizeError(`${dir}: ${field} must be a list`);
    for (const g of gens) {
      if (!isObject(g) || typeof g.name !== 'string') throw new KustomizeError(`${dir}: ${field} entry without name`);
      for (const key of Object.keys(g)) {
        if (!['name', 'behavior', 'envs', 'files', 'literals', 'type'].includes(key)) {
          throw new KustomizeError(`${dir}: ${field} "${g.name}": "${key}" is outside the subset`);
        }
      }
      const what = `${dir}: ${field} ${g.name}`;
      const data = generatorData(dir, g, what);
      const encoded =
        kind === 'Secret' ? Object.fromEntries(Object.entries(data).map(([key, v]) => [key, base64Lines(v)])) : data;
      const behavior = (g.behavior as string | undefined) ?? 'create';
      const existing = items.find((i) => i.generated && i.obj.kind === kind && i.obj.metadata.name === g.name);
      if (behavior === 'create') {
        if (existing) throw new KustomizeError(`${what}: already generated below; use behavior: merge or replace`);
        const obj: K8sObject = { apiVersion: 'v1', kind, metadata: { name: g.name }, data: encoded };
        if (kind === 'Secret') obj.type = (g.type as string | undefined) ?? 'Opaque';
        items.push({ obj, generated: true });
      } else if (behavior === 'merge' || behavior === 'replace') {
        if (!existing) throw new KustomizeError(`${what}: behavior ${behavior} but no ${kind} ${g.name} below`);
        existing.obj.data = behavior === 'merge' ? { ...(existing.obj.data as JsonObject), ...encoded } : encoded;
      } else {
        throw new KustomizeError(`${what}: unknown behavior ${behavior}`);
      }
    }
  }
}

// ---- patches ---------------------------------------------------------------------------------------------------------

/** Strategic merge: maps merge, null deletes, pod-spec lists with a merge key merge by it, other lists replace. */
function strategicMerge(target: Json, patch: Json, builtin: boolean): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) throw new KustomizeError(`patch directive ${key} is outside the subset`);
    if (value === null) {
      delete out[key];
      continue;
    }
    const mergeKey = builtin ? MERGE_KEYS[key] : undefined;
    const current = out[key];
    if (Array.isArray(value) && mergeKey !== undefined && Array.isArray(current)) {
      // as kustomize orders them: the patch's elements (merged into their originals), then the originals it left out
      const merged: Json[] = [];
      for (const element of value) {
        if (!isObject(element) || element[mergeKey] === undefined) {
          throw new KustomizeError(`patch: every element of ${key} needs ${mergeKey}`);
        }
        const original = current.find((e) => isObject(e) && e[mergeKey] === element[mergeKey]);
        merged.push(original === undefined ? clone(element) : strategicMerge(original, element, builtin));
      }
      for (const original of current) {
        if (!value.some((e) => isObject(e) && isObject(original) && e[mergeKey] === original[mergeKey])) {
          merged.push(clone(original));
        }
      }
      out[key] = merged;
    } else if (isObject(value)) {
      out[key] = strategicMerge(current as Json, value, builtin);
    } else {
      out[key] = clone(value);
    }
  }
  return out;
}

function pointer(pathText: string): string[] {
  if (!pathText.startsWith('/')) throw new KustomizeError(`JSON patch path "${pathText}" must start with /`);
  return pathText
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function jsonPatch(target: K8sObject, ops: Json[]): void {
  for (const op of ops) {
    if (!isObject(op) || typeof op.op !== 'string' || typeof op.path !== 'string') {
      throw new KustomizeError('JSON patch: every operation needs op and path');
    }
    const parts = pointer(op.path);
    const last = parts.pop() as string;
    let parent: Json = target;
    for (const part of parts) {
      const next: Json | undefined = Array.isArray(parent)
        ? parent[Number(part)]
        : isObject(parent)
          ? parent[part]
          : undefined;
      if (next === undefined) throw new KustomizeError(`JSON patch: ${op.path}: ${part} does not exist`);
      parent = next;
    }
    if (op.op !== 'add' && op.op !== 'replace' && op.op !== 'remove') {
      throw new KustomizeError(`JSON patch op ${op.op} is outside the subset`);
    }
    if (Array.isArray(parent)) {
      const index = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length) {
        throw new KustomizeError(`JSON patch: ${op.path}: bad index`);
      }
      if (op.op === 'add') parent.splice(index, 0, clone(op.value as Json));
      else if (index >= parent.length) throw new KustomizeError(`JSON patch: ${op.path} does not exist`);
      else if (op.op === 'replace') parent[index] = clone(op.value as Json);
      else parent.splice(index, 1);
    } else if (isObject(parent)) {
      if (op.op !== 'add' && !(last in parent)) throw new KustomizeError(`JSON patch: ${op.path} does not exist`);
      if (op.op === 'remove') delete parent[last];
      else parent[last] = clone(op.value as Json);
    } else {
      throw new KustomizeError(`JSON patch: ${op.path}: parent is not a container`);
    }
  }
}

function matchesTarget(obj: K8sObject, target: JsonObject, where: string): boolean {
  for (const key of Object.keys(target)) {
    if (!['kind', 'name', 'labelSelector'].includes(key)) {
      throw new KustomizeError(`${where}: target.${key} is outside the subset`);
    }
  }
  if (target.kind !== undefined && obj.kind !== target.kind) return false;
  if (target.name !== undefined && !new RegExp(`^(?:${target.name})$`).test(obj.metadata.name)) return false;
  if (typeof target.labelSelector === 'string') {
    for (const term of target.labelSelector.split(',')) {
      const [key, value] = term.split('=').map((s) => s.trim());
      if (!key || value === undefined || term.includes('!')) {
        throw new KustomizeError(`${where}: labelSelector "${term}": only key=value terms are in the subset`);
      }
      if (obj.metadata.labels?.[key] !== value) return false;
    }
  }
  return true;
}

function applyPatches(dir: string, k: JsonObject, items: Item[]) {
  const patches = k.patches;
  if (patches === undefined) return;
  if (!Array.isArray(patches)) throw new KustomizeError(`${dir}: patches must be a list`);
  for (const p of patches) {
    if (!isObject(p)) throw new KustomizeError(`${dir}: a patch must be a mapping`);
    for (const key of Object.keys(p)) {
      if (!['path', 'patch', 'target'].includes(key))
        throw new KustomizeError(`${dir}: patch.${key} is outside the subset`);
    }
    const where = `${dir}: patch ${typeof p.path === 'string' ? p.path : '(inline)'}`;
    const text =
      typeof p.path === 'string'
        ? readFileSync(within(dir, p.path, 'patch'), 'utf8')
        : typeof p.patch === 'string'
          ? p.patch
          : undefined;
    if (text === undefined) throw new KustomizeError(`${where}: needs path or patch`);
    const target = p.target === undefined ? undefined : p.target;
    if (target !== undefined && !isObject(target)) throw new KustomizeError(`${where}: target must be a mapping`);
    const parsed = YAML.parseAllDocuments(text).map((d) => d.toJS() as Json);
    if (parsed.length === 1 && Array.isArray(parsed[0])) {
      if (!target) throw new KustomizeError(`${where}: a JSON 6902 patch needs a target`);
      const hits = items.filter((i) => matchesTarget(i.obj, target, where));
      if (hits.length === 0) throw new KustomizeError(`${where}: the target selects nothing`);
      for (const hit of hits) jsonPatch(hit.obj, parsed[0]);
      continue;
    }
    for (const doc of parsed) {
      if (doc === null) continue;
      if (!isObject(doc) || typeof doc.kind !== 'string' || !isObject(doc.metadata)) {
        throw new KustomizeError(`${where}: a strategic merge patch needs kind and metadata`);
      }
      const hits = target
        ? items.filter((i) => matchesTarget(i.obj, target, where))
        : items.filter((i) => i.obj.kind === doc.kind && i.obj.metadata.name === (doc.metadata as JsonObject).name);
      if (hits.length === 0) throw new KustomizeError(`${where}: no ${doc.kind} to patch`);
      if (!target && hits.length > 1) throw new KustomizeError(`${where}: ${doc.kind} matches more than one object`);
      for (const hit of hits) {
        // with a target, the patch's own name is a placeholder: it patches every object the target selects
        const body = target
          ? { ...doc, metadata: { ...(doc.metadata as JsonObject), name: hit.obj.metadata.name } }
          : doc;
        const merged = strategicMerge(hit.obj, body, BUILTIN_GROUPS.has(hit.obj.apiVersion)) as K8sObject;
        hit.obj = merged;
      }
    }
  }
}

// ---- transformers ----------------------------------------------------------------------------------------------------

function at(obj: Json, keys: string[]): Json | undefined {
  let cur: Json | undefined = obj;
  for (const key of keys) cur = isObject(cur) ? cur[key] : undefined;
  return cur;
}

function applyNamespace(k: JsonObject, items: Item[]) {
  if (k.namespace === undefined) return;
  if (typeof k.namespace !== 'string') throw new KustomizeError('namespace must be a string');
  for (const item of items) if (!CLUSTER_SCOPED.has(item.obj.kind)) item.obj.metadata.namespace = k.namespace;
}

function applyLabels(dir: string, k: JsonObject, items: Item[]) {
  if (k.labels === undefined) return;
  if (!Array.isArray(k.labels)) throw new KustomizeError(`${dir}: labels must be a list`);
  for (const entry of k.labels) {
    if (!isObject(entry) || !isObject(entry.pairs)) throw new KustomizeError(`${dir}: labels entry needs pairs`);
    for (const key of Object.keys(entry)) {
      if (!['pairs', 'includeSelectors', 'includeTemplates'].includes(key)) {
        throw new KustomizeError(`${dir}: labels.${key} is outside the subset`);
      }
    }
    if (entry.includeSelectors === true) {
      throw new KustomizeError(`${dir}: labels.includeSelectors is outside the subset (selectors are immutable)`);
    }
    const pairs = entry.pairs as Record<string, string>;
    for (const item of items) {
      item.obj.metadata.labels = { ...(item.obj.metadata.labels ?? {}), ...pairs };
      const templatePath = POD_TEMPLATE_PATHS[item.obj.kind];
      if (entry.includeTemplates === true && templatePath) {
        const template = at(item.obj, templatePath);
        if (!isObject(template)) continue;
        const metadata = isObject(template.metadata) ? template.metadata : {};
        metadata.labels = { ...(isObject(metadata.labels) ? metadata.labels : {}), ...pairs };
        template.metadata = metadata;
      }
    }
  }
}

/** `registry/name:tag@digest` → its name (what an `images` entry matches). */
export function imageName(image: string): string {
  const noDigest = image.split('@')[0] as string;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

function applyImages(dir: string, k: JsonObject, items: Item[]) {
  if (k.images === undefined) return;
  if (!Array.isArray(k.images)) throw new KustomizeError(`${dir}: images must be a list`);
  const rewrite = (node: Json) => {
    if (Array.isArray(node)) node.forEach(rewrite);
    if (!isObject(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if ((key === 'containers' || key === 'initContainers') && Array.isArray(value)) {
        for (const c of value) {
          if (!isObject(c) || typeof c.image !== 'string') continue;
          for (const entry of k.images as Json[]) {
            if (!isObject(entry) || typeof entry.name !== 'string') throw new KustomizeError(`${dir}: images entry`);
            if (imageName(c.image) !== entry.name) continue;
            const name = typeof entry.newName === 'string' ? entry.newName : entry.name;
            const tagPart = c.image.slice(imageName(c.image).length);
            if (typeof entry.digest === 'string') c.image = `${name}@${entry.digest}`;
            else if (typeof entry.newTag === 'string') c.image = `${name}:${entry.newTag}`;
            else c.image = `${name}${tagPart}`;
          }
        }
      }
      rewrite(value);
    }
  };
  for (const item of items) rewrite(item.obj);
}

// ---- build -----------------------------------------------------------------------------------------------------------

function build(dir: string): Item[] {
  const k = readKustomization(dir);
  const items: Item[] = [];
  for (const r of strings(k.resources, `${dir}: resources`)) {
    const file = path.resolve(dir, r);
    if (!existsSync(file)) throw new KustomizeError(`${dir}: resource ${r} does not exist`);
    if (statSync(file).isDirectory()) items.push(...build(file));
    else items.push(...parseDocs(readFileSync(within(dir, r, 'resource'), 'utf8'), file).map((obj) => ({ obj })));
  }
  applyGenerators(dir, k, items);
  applyPatches(dir, k, items);
  applyNamespace(k, items);
  applyLabels(dir, k, items);
  applyImages(dir, k, items);
  const seen = new Set<string>();
  for (const { obj } of items) {
    const id = `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (seen.has(id)) throw new KustomizeError(`${dir}: ${id} is defined twice`);
    seen.add(id);
  }
  return items;
}

/** Go's encoding/json: sorted map keys (as here, built sorted) and <, >, &, U+2028, U+2029 escaped. */
function goJson(value: Json): string {
  const sorted = (v: Json): Json =>
    Array.isArray(v)
      ? v.map(sorted)
      : isObject(v)
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((key) => [key, sorted(v[key] as Json)]),
          )
        : v;
  return JSON.stringify(sorted(value)).replace(
    /[<>&\u2028\u2029]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * kustomize's name suffix (api/hasher): sha256 of the JSON of kind, name, data (and type for a Secret), the first 10
 * hex digits with 0 1 3 a e swapped for g h k m t. The name is hashed as "": kustomize looks it up with the single
 * path segment "metadata/name", which finds nothing (kubectl 1.32's kustomize v5.5 gives the same suffixes).
 */
export function contentHash(obj: K8sObject): string {
  const fields: JsonObject = { kind: obj.kind, name: '', data: (obj.data as Json) ?? '' };
  if (obj.kind === 'Secret') fields.type = (obj.type as Json) ?? '';
  const hex = createHash('sha256').update(goJson(fields)).digest('hex');
  const swap: Record<string, string> = { '0': 'g', '1': 'h', '3': 'k', a: 'm', e: 't' };
  return [...hex.slice(0, 10)].map((ch) => swap[ch] ?? ch).join('');
}

/** Rewrites, in every pod spec, the references to generated ConfigMaps and Secrets to their hashed names. */
function fixReferences(items: Item[], renamed: Map<string, string>) {
  const rename = (kind: 'ConfigMap' | 'Secret', namespace: string | undefined, name: Json | undefined) =>
    typeof name === 'string' ? (renamed.get(`${kind}/${namespace ?? ''}/${name}`) ?? name) : name;
  for (const { obj } of items) {
    const templatePath = POD_TEMPLATE_PATHS[obj.kind];
    const pod = templatePath ? at(obj, [...templatePath, 'spec']) : obj.kind === 'Pod' ? obj.spec : undefined;
    if (!isObject(pod)) continue;
    const ns = obj.metadata.namespace;
    for (const v of (pod.volumes as Json[] | undefined) ?? []) {
      if (!isObject(v)) continue;
      if (isObject(v.configMap)) v.configMap.name = rename('ConfigMap', ns, v.configMap.name) as Json;
      if (isObject(v.secret)) v.secret.secretName = rename('Secret', ns, v.secret.secretName) as Json;
      const sources = isObject(v.projected) ? (v.projected.sources as Json[] | undefined) : undefined;
      for (const s of sources ?? []) {
        if (isObject(s) && isObject(s.configMap)) s.configMap.name = rename('ConfigMap', ns, s.configMap.name) as Json;
        if (isObject(s) && isObject(s.secret)) s.secret.name = rename('Secret', ns, s.secret.name) as Json;
      }
    }
    for (const ps of (pod.imagePullSecrets as Json[] | undefined) ?? []) {
      if (isObject(ps)) ps.name = rename('Secret', ns, ps.name) as Json;
    }
    const containers = [...((pod.containers as Json[]) ?? []), ...((pod.initContainers as Json[]) ?? [])];
    for (const c of containers) {
      if (!isObject(c)) continue;
      for (const e of (c.envFrom as Json[] | undefined) ?? []) {
        if (isObject(e) && isObject(e.configMapRef)) {
          e.configMapRef.name = rename('ConfigMap', ns, e.configMapRef.name) as Json;
        }
        if (isObject(e) && isObject(e.secretRef)) e.secretRef.name = rename('Secret', ns, e.secretRef.name) as Json;
      }
      for (const e of (c.env as Json[] | undefined) ?? []) {
        const from = isObject(e) && isObject(e.valueFrom) ? e.valueFrom : undefined;
        if (from && isObject(from.configMapKeyRef)) {
          from.configMapKeyRef.name = rename('ConfigMap', ns, from.configMapKeyRef.name) as Json;
        }
        if (from && isObject(from.secretKeyRef)) {
          from.secretKeyRef.name = rename('Secret', ns, from.secretKeyRef.name) as Json;
        }
      }
    }
  }
}

/** Renders the kustomization in `dir` (like `kubectl kustomize dir`), objects in the order they were loaded. */
export function kustomize(dir: string): K8sObject[] {
  const items = build(path.resolve(dir));
  const renamed = new Map<string, string>();
  for (const item of items) {
    if (!item.generated) continue;
    const { kind, metadata } = item.obj;
    const hashed = `${metadata.name}-${contentHash(item.obj)}`;
    renamed.set(`${kind}/${metadata.namespace ?? ''}/${metadata.name}`, hashed);
    metadata.name = hashed;
  }
  fixReferences(items, renamed);
  return items.map((i) => i.obj);
}
