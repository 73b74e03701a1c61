import { Webhook } from 'standardwebhooks';

/** A CloudEvents 1.0 structured-mode event (JSON). */
export interface CloudEvent<T = unknown> {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  data: T;
}

export const EVENT_SOURCE = 'urn:triage:gateway';

export function eventType(event: 'released' | 'rejected' | 'failed'): string {
  return `org.triage.job.${event}`;
}

/**
 * Signs a payload per the Standard Webhooks specification (HMAC-SHA256 over `id.timestamp.body`), so receivers can
 * verify it with any Standard Webhooks library. The webhook id is the CloudEvent id: the same on every retry.
 */
export function signedHeaders(secret: string, id: string, at: Date, body: string): Record<string, string> {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
}
