/** Model folders for tests: the bundled ones, and temp copies with edited manifests. */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const MODELS_DIR = path.join(REPO_DIR, 'models') + path.sep;
export const SYNC_CEILING_MS = 5_000;

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

/** A temp directory of its own (a data dir, a work dir). */
export function tempDir(kind: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `triage-${kind}-`));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}
