import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import YAML from 'yaml';
import { hashKey, roles } from '../platform/auth.ts';
import { missingEvidence } from '../registry/evidence.ts';
import { loadModel } from '../registry/load.ts';
import { CliError, EXIT } from './client.ts';

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Commands that need no gateway: a model repository's CI validates its folder; an operator makes a key. */
export function addOfflineCommands(program: Command): void {
  const models = program.command('models').description('model folders, checked offline');
  const validate = models
    .command('validate <dir>')
    .description("the manifest, each artifact's sha256 and the release evidence, as the gateway checks them at start")
    .option('--sync-ceiling-ms <ms>', 'decision windows longer than this are async', '5000');
  validate.action(async (dir: string) => {
    const g = validate.optsWithGlobals() as { json?: boolean; syncCeilingMs: string };
    const abs = path.resolve(dir);
    try {
      const m = await loadModel(abs, path.dirname(abs), Number(g.syncCeilingMs));
      // beyond what loading checks (shapes, hashes, lineage): a version serving real answers must be promotable
      const { primary, canary } = m.manifest.routing;
      const incomplete = m.manifest.versions
        .filter((v) => v.version === primary || v.version === canary?.version)
        .map((v) => ({ version: v.version, missing: missingEvidence(v.evidence) }))
        .filter((v) => v.missing.length > 0);
      if (incomplete.length > 0) {
        throw new Error(
          incomplete
            .map((v) => `${m.file}: versions ${v.version}: release evidence lacks ${v.missing.join(', ')}`)
            .join('\n'),
        );
      }
      const summary = {
        valid: true,
        model: m.manifest.name,
        tier: m.classification.tier,
        versions: m.manifest.versions.map((v) => v.version),
        primary: m.manifest.routing.primary,
      };
      out(
        g.json
          ? JSON.stringify(summary)
          : `${summary.model}: valid (${summary.tier}; versions ${summary.versions.join(', ')})`,
      );
    } catch (err) {
      const message = (err as Error).message;
      if (g.json) out(JSON.stringify({ valid: false, errors: message.split('\n') }));
      throw new CliError(`invalid: ${message}`, EXIT.failed);
    }
  });

  const keys = program.command('keys').description('API keys');
  const make = keys
    .command('new <id>')
    .description('a new key, printed once, and the entry to add to TRIAGE_API_KEYS (only its sha256)')
    .option('--role <role>', roles.join(' | '), 'client')
    .option('--models <names>', 'comma-separated models, * for all', '*');
  make.action((id: string) => {
    const g = make.optsWithGlobals() as { json?: boolean; role: string; models: string };
    if (!(roles as readonly string[]).includes(g.role))
      throw new CliError(`--role must be one of ${roles.join(', ')}`, EXIT.usage);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id))
      throw new CliError('the key id must be 1-64 of letters, digits, . _ -', EXIT.usage);
    const key = `trg_${g.role}_${randomBytes(24).toString('base64url')}`;
    const entry = { id, role: g.role, sha256: hashKey(key), models: g.models.split(',').map((m) => m.trim()) };
    if (g.json) return out(JSON.stringify({ key, entry }));
    out(
      `key (shown once; give it to its owner): ${key}\n\nadd to TRIAGE_API_KEYS:\n${YAML.stringify({ keys: [entry] })}`,
    );
  });
}
