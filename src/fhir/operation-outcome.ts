import type { Context } from 'hono';
import type { AppEnv } from '../context.ts';
import type { Problem } from '../platform/errors.ts';
import { TRIAGE_FHIR_BASE } from './risk-assessment.ts';

/** FHIR issue types (http://hl7.org/fhir/issue-type) by HTTP status: what a FHIR client branches on. */
function issueType(status: number): string {
  if (status === 401) return 'login';
  if (status === 403) return 'forbidden';
  if (status === 404 || status === 410) return 'not-found';
  if (status === 409) return 'conflict';
  if (status === 413) return 'too-long';
  if (status === 415) return 'not-supported';
  if (status === 422) return 'incomplete';
  if (status === 503) return 'transient';
  if (status === 504) return 'timeout';
  return status < 500 ? 'invalid' : 'exception';
}

/** A Problem as a FHIR OperationOutcome; Triage's stable code travels in `details` so clients can still branch on it. */
export function operationOutcome(problem: Problem): Record<string, unknown> {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: problem.status >= 500 ? 'fatal' : 'error',
        code: issueType(problem.status),
        details: { coding: [{ system: `${TRIAGE_FHIR_BASE}/problems`, code: problem.code }], text: problem.message },
        diagnostics: problem.message,
      },
    ],
  };
}

/** The FHIR face of problemResponse: same status, headers and request id, an OperationOutcome body. */
export function outcomeResponse(c: Context<AppEnv>, problem: Problem): Response {
  c.set('requestIdSent', true);
  return new Response(JSON.stringify(operationOutcome(problem)), {
    status: problem.status,
    headers: {
      'content-type': 'application/fhir+json',
      'x-request-id': c.get('requestId') ?? '',
      'cache-control': 'no-store',
      ...problem.headers,
    },
  });
}

/** The code a client reads back from an OperationOutcome written by operationOutcome. */
export function outcomeCode(body: unknown): string | undefined {
  const issue = (body as { issue?: Array<{ details?: { coding?: Array<{ code?: string }> } }> })?.issue?.[0];
  return issue?.details?.coding?.[0]?.code;
}
