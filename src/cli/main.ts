#!/usr/bin/env node
/**
 * `triage`: the operator's command line over the gateway's API (reviews, dead letters, routing, batch runs) and two
 * offline tools (validate a model folder, make an API key). Base URL and key from --url/--key or TRIAGE_URL /
 * TRIAGE_KEY; --json prints the API's answer as it came; exit codes in client.ts.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';
import { CliError, EXIT } from './client.ts';
import { addOfflineCommands } from './offline.ts';
import { addOnlineCommands } from './online.ts';

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const program = new Command('triage')
    .description('Triage gateway command line')
    .option('--url <url>', 'gateway base URL (env TRIAGE_URL)', env.TRIAGE_URL ?? 'http://127.0.0.1:8080')
    .option('--key <key>', 'API key or bearer token (env TRIAGE_KEY)', env.TRIAGE_KEY)
    .option('--json', 'print JSON answers')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  addOnlineCommands(program);
  addOfflineCommands(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof CliError) {
      if (program.opts().json && err.body !== undefined) process.stdout.write(`${JSON.stringify(err.body)}\n`);
      process.stderr.write(`triage: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`triage: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}

// run when executed (directly or through the npm bin link), not when imported by a test
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = await run(process.argv.slice(2));
}
