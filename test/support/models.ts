/** Model folders for tests: the bundled ones, and temp copies with edited manifests. */
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const MODELS_DIR = path.join(REPO_DIR, 'models') + path.sep;
export const SYNC_CEILING_MS = 5_000;

/**
 * The latency budget of every sync model in tests that are not about deadlines: a machine whose cores are busy
 * still answers within it (the bundled budgets are 50 ms). The most a sync model may have: the sync ceiling.
 */
export const GENEROUS_BUDGET_MS = SYNC_CEILING_MS;

// biome-ignore lint/suspicious/noExplicitAny: the manifest is edited as plain YAML data
export type ManifestEdit = (manifest: any) => void;

/**
 * Copies the named bundled model folders into a temp models dir, applying `edit` to each parsed model.yaml (a temp
 * copy, so a model being added to models/ meanwhile never reaches the tests). Remove it with `removeDir`.
 */
export async function tempModels(edits: Record<string, ManifestEdit | null>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'triage-models-'));
  for (const [name, edit] of Object.entries(edits)) {
    await cp(path.join(MODELS_DIR, name), path.join(dir, name), { recursive: true });
    if (edit) await editManifest(dir, name, edit);
  }
  return dir;
}

/** Rewrites `<dir>/<model>/model.yaml` with `edit` applied (to the file on disk). */
export async function editManifest(dir: string, model: string, edit: ManifestEdit): Promise<void> {
  const file = path.join(dir, model, 'model.yaml');
  const manifest = YAML.parse(await readFile(file, 'utf8'));
  edit(manifest);
  await writeFile(file, YAML.stringify(manifest));
}

/** The bundled model folders (those with a manifest). */
export async function bundledModelNames(): Promise<string[]> {
  const entries = await readdir(MODELS_DIR, { withFileTypes: true });
  const names: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const files = await readdir(path.join(MODELS_DIR, e.name));
    if (files.includes('model.yaml')) names.push(e.name);
  }
  return names.sort();
}

/** Raises the latency budget of every sync model under `dir` to GENEROUS_BUDGET_MS (manifests edited on disk). */
export async function raiseBudgets(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !(await readdir(path.join(dir, e.name))).includes('model.yaml')) continue;
    await editManifest(dir, e.name, (m) => {
      if (m.sync) m.sync.latencyBudgetMs = GENEROUS_BUDGET_MS;
    });
  }
}

/**
 * A temp copy of every bundled model with generous budgets, for a gateway started the way main() starts it (from a
 * models dir): what `buildGateway` does in memory. Remove it with `removeDir`.
 */
export async function generousModels(): Promise<string> {
  const dir = await tempModels(Object.fromEntries((await bundledModelNames()).map((n) => [n, null])));
  await raiseBudgets(dir);
  return dir;
}

/** A temp directory of its own (a data dir, a work dir). */
export function tempDir(kind: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `triage-${kind}-`));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}
