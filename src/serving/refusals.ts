import { Problem } from '../platform/errors.ts';
import { BatchCancelled } from '../runtime/batcher.ts';
import type { Suspension } from './suspension.ts';

/** What a caller with no score must do instead (a bedside caller, a suspended or late model). */
export const NO_SCORE_ACTION = 'no score: follow the standard protocol';

/** What a caller of a model in silent deployment is told in place of a score. */
export const SILENT_ACTION = 'silent deployment: no score is shown; follow the standard protocol';

/** The refusal of a suspended version: a bedside caller follows the standard protocol; a job or batch run waits. */
export function suspendedProblem(s: Suspension, version: string): Problem {
  const what = s.version === undefined ? `model "${s.model}"` : `version "${version}" of model "${s.model}"`;
  return new Problem('model_suspended', `${what} is suspended: ${s.reason}`, {
    extensions: { action: NO_SCORE_ACTION, model: s.model, version, suspendedAt: s.at },
  });
}

/** The refusal of a caller whose deadline passed before a score: no score, never a late one. */
export function deadlineProblem(deadlineMs: number): Problem {
  return new Problem('deadline_exceeded', `no score within ${deadlineMs} ms`, {
    extensions: { action: NO_SCORE_ACTION, deadlineMs },
  });
}

/** A runtime's failure as the caller sees it: a timeout is a deadline miss, a remote failure a 502, else a 500. */
export function asProblem(err: unknown): Problem {
  if (err instanceof Problem) return err;
  if (err instanceof BatchCancelled) {
    return new Problem('deadline_exceeded', 'no score within the deadline', {
      extensions: { action: NO_SCORE_ACTION },
    });
  }
  const e = err as { name?: string; kind?: string };
  if (e?.name === 'RemoteError') {
    if (e.kind === 'timeout') {
      return new Problem('deadline_exceeded', 'the remote model did not answer in time', {
        extensions: { action: NO_SCORE_ACTION },
      });
    }
    return new Problem('upstream_failed', `the remote model failed (${e.kind})`, {
      extensions: { action: NO_SCORE_ACTION, upstream: e.kind },
    });
  }
  return new Problem('inference_failed', 'the model failed to score this request', {
    extensions: { action: NO_SCORE_ACTION },
    cause: err,
  });
}
