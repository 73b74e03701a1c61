import type { Command } from 'commander';
import { type Answer, CliError, type Connection, call, EXIT } from './client.ts';

interface Globals {
  url: string;
  key?: string;
  json?: boolean;
}

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Runs one API call with the global options, printing JSON or the given human rendering. */
function action<A extends unknown[]>(
  cmd: Command,
  fn: (conn: Connection, ...args: A) => Promise<{ answer: Answer; human: () => string | undefined }>,
) {
  return async (...args: A) => {
    const g = cmd.optsWithGlobals() as Globals;
    const { answer, human } = await fn({ baseUrl: g.url, key: g.key }, ...args);
    if (g.json) out(JSON.stringify(answer.body));
    else {
      const text = human();
      if (text !== undefined) out(text);
    }
  };
}

const required = (v: unknown, name: string): string => {
  if (typeof v !== 'string' || v.length === 0) throw new CliError(`${name} is required`, EXIT.usage);
  return v;
};

export function addOnlineCommands(program: Command): void {
  const reviews = program.command('reviews').description('the clinician review queue');
  const list = reviews.command('list').option('--model <model>').option('--limit <n>', 'at most', '50');
  list.action(
    action(list, async (conn) => {
      const o = list.opts() as { model?: string; limit: string };
      const q = new URLSearchParams({ limit: o.limit, ...(o.model ? { model: o.model } : {}) });
      const answer = await call(conn, 'GET', `/v1/reviews?${q}`);
      return {
        answer,
        human: () =>
          (answer.body.items as Array<{ id: string; model: string; ageSeconds: number; escalated: boolean }>)
            .map((r) => `${r.id}\t${r.model}\t${r.ageSeconds}s${r.escalated ? '\tescalated' : ''}`)
            .join('\n') || 'nothing waiting',
      };
    }),
  );
  const show = reviews.command('show <id>');
  show.action(
    action(show, async (conn, id: string) => {
      const answer = await call(conn, 'GET', `/v1/reviews/${encodeURIComponent(id)}`);
      return { answer, human: () => JSON.stringify(answer.body, null, 2) };
    }),
  );
  const decide = reviews
    .command('decide <id> <decision>')
    .description('approve | reject | amend')
    .requiredOption('--reason <text>', 'why (recorded in the audit trail)')
    .option('--output <json>', 'the amended output (decision amend), e.g. \'{"category":"no-action"}\'');
  decide.action(
    action(decide, async (conn, id: string, decision: string) => {
      const o = decide.opts() as { reason: string; output?: string };
      let output: unknown;
      if (o.output !== undefined) {
        try {
          output = JSON.parse(o.output);
        } catch {
          throw new CliError('--output must be JSON', EXIT.usage);
        }
      }
      const answer = await call(conn, 'POST', `/v1/reviews/${encodeURIComponent(id)}/decision`, {
        decision,
        reason: o.reason,
        ...(output !== undefined ? { output } : {}),
      });
      return { answer, human: () => `${id}: ${answer.body.state}` };
    }),
  );

  const dead = program.command('dead-letters').description('callbacks that exhausted their retries');
  const dlList = dead.command('list');
  dlList.action(
    action(dlList, async (conn) => {
      const answer = await call(conn, 'GET', '/v1/callbacks/dead-letters');
      return {
        answer,
        human: () =>
          (answer.body.items as Array<{ eventId?: string; id?: string }>).map((d) => JSON.stringify(d)).join('\n') ||
          'no dead letters',
      };
    }),
  );
  const replay = dead.command('replay <eventId>');
  replay.action(
    action(replay, async (conn, eventId: string) => {
      const answer = await call(conn, 'POST', `/v1/callbacks/dead-letters/${encodeURIComponent(eventId)}/replay`);
      return { answer, human: () => `${eventId}: replayed` };
    }),
  );

  const routing = program.command('routing').description('releases: primary, canary, shadows');
  const path = (model: string, tail = '') => `/v1/models/${encodeURIComponent(model)}/routing${tail}`;
  const shown = (answer: Answer) => () => JSON.stringify(answer.body.routing, null, 2);
  const rShow = routing.command('show <model>');
  rShow.action(
    action(rShow, async (conn, model: string) => {
      const answer = await call(conn, 'GET', path(model));
      return { answer, human: shown(answer) };
    }),
  );
  const promote = routing.command('promote <model> <version>').requiredOption('--reason <text>');
  promote.action(
    action(promote, async (conn, model: string, version: string) => {
      const answer = await call(conn, 'POST', path(model, '/promote'), { version, reason: promote.opts().reason });
      return { answer, human: shown(answer) };
    }),
  );
  const rollback = routing.command('rollback <model>').requiredOption('--reason <text>');
  rollback.action(
    action(rollback, async (conn, model: string) => {
      const answer = await call(conn, 'POST', path(model, '/rollback'), { reason: rollback.opts().reason });
      return { answer, human: shown(answer) };
    }),
  );
  const canary = routing.command('canary <model> <version> <weight>').requiredOption('--reason <text>');
  canary.action(
    action(canary, async (conn, model: string, version: string, weight: string) => {
      const body = { version, weight: Number(weight), reason: canary.opts().reason };
      const answer = await call(conn, 'PUT', path(model, '/canary'), body);
      return { answer, human: shown(answer) };
    }),
  );
  const shadow = routing
    .command('shadow <model> [versions...]')
    .requiredOption('--reason <text>')
    .option('--sample-rate <rate>', 'share of traffic mirrored, 0-1');
  shadow.action(
    action(shadow, async (conn, model: string, versions: string[]) => {
      const o = shadow.opts() as { reason: string; sampleRate?: string };
      const body = { versions, reason: o.reason, ...(o.sampleRate ? { sampleRate: Number(o.sampleRate) } : {}) };
      const answer = await call(conn, 'PUT', path(model, '/shadow'), body);
      return { answer, human: shown(answer) };
    }),
  );

  const batch = program.command('batch').description('on-demand batch runs');
  const submit = batch
    .command('submit <file>')
    .description("FILE is a path in the client's data area on the gateway (clients/<key id>/…)")
    .requiredOption('--model <model>')
    .option('--format <format>', 'ndjson | csv | fhir-ndjson (default: from the extension)')
    .option('--follow', 'poll until the run ends, printing X-Progress');
  submit.action(async (file: string) => {
    const g = submit.optsWithGlobals() as Globals & { model: string; format?: string; follow?: boolean };
    const conn = { baseUrl: g.url, key: g.key };
    const format = g.format ?? (file.endsWith('.csv') ? 'csv' : 'ndjson');
    const accepted = await call(conn, 'POST', `/v1/models/${encodeURIComponent(g.model)}/batches`, {
      input: { path: required(file, 'FILE'), format },
    });
    const status = accepted.headers.get('content-location') ?? `/v1/batches/${accepted.body.id}`;
    if (!g.follow) return out(g.json ? JSON.stringify(accepted.body) : `${accepted.body.id}\t${status}`);
    for (;;) {
      const res = await call(conn, 'GET', status).catch((err: unknown) => {
        // a run that failed is the thing asked about failing, not a refused request
        if (err instanceof CliError && (err.body as { code?: string })?.code === 'run_failed') {
          throw new CliError(err.message, EXIT.failed, err.body);
        }
        throw err;
      });
      if (res.status === 200) {
        if (g.json) out(JSON.stringify(res.body));
        else out(`done: ${(res.body.output as unknown[]).length} output file(s)`);
        return;
      }
      if (!g.json) process.stderr.write(`${res.headers.get('x-progress') ?? res.body.state}\n`);
      // the gateway says how long to wait between polls
      const wait = Number(res.headers.get('retry-after') ?? '2') * 1000;
      await new Promise((r) => setTimeout(r, Number(process.env.TRIAGE_POLL_MS) || wait));
    }
  });
}
