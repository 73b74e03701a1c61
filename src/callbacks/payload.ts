import type { JobRecord } from '../jobs/store.ts';
import { type CloudEvent, EVENT_SOURCE, eventType } from './event.ts';

/** The callback event of a finished job: the result only when released (amended output if a clinician amended it). */
export function jobEvent(
  record: JobRecord,
  event: 'released' | 'rejected' | 'failed',
  eventId: string,
  at: Date,
): CloudEvent {
  return {
    specversion: '1.0',
    id: eventId,
    source: EVENT_SOURCE,
    type: eventType(event),
    subject: `/v1/jobs/${record.id}`,
    time: at.toISOString(),
    datacontenttype: 'application/json',
    data: {
      jobId: record.id,
      model: record.model,
      version: record.version,
      state: record.state,
      // absolute, as the caller reached the gateway (or TRIAGE_PUBLIC_URL): a callback is read far from the request
      statusUrl: record.baseUrl ? `${record.baseUrl}/v1/jobs/${record.id}` : `/v1/jobs/${record.id}`,
      ...(record.correlation ? { correlation: record.correlation } : {}),
      ...(event === 'released' && record.state === 'released' ? { result: releasedResult(record) } : {}),
      ...(record.decision
        ? {
            decision: {
              outcome: record.decision.outcome,
              at: new Date(record.decision.at).toISOString(),
              reason: record.decision.reason,
              // who decided: the reviewer's key id, or the named person behind a bearer token
              by: {
                id: record.decision.by,
                ...(record.decision.bySubject !== undefined ? { subject: record.decision.bySubject } : {}),
                ...(record.decision.byName !== undefined ? { name: record.decision.byName } : {}),
              },
            },
          }
        : {}),
      ...(event === 'failed' ? { error: record.error ?? 'failed' } : {}),
    },
  };
}

/** What a released job shows: the amended output when a clinician amended it, else the model's. */
export function releasedResult(record: JobRecord): { output: unknown; amended: boolean; reviewed: boolean } {
  return {
    output: record.amendedOutput ?? record.output,
    amended: record.amendedOutput !== undefined,
    reviewed: record.decision !== undefined,
  };
}
