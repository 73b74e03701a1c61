import { Problem } from '../platform/errors.ts';

/**
 * Clinical notes → model input. The text comes as plain text or as a FHIR R4 `DocumentReference` whose first
 * attachment is base64 text; it is tokenised and feature-hashed (unigrams and bigrams, FNV-1a) into a fixed-width,
 * L2-normalised vector, the `features` input of document models. The model builders use this same function, so
 * training-time and serving-time features cannot drift.
 */

export const DOCUMENT_TEXT_TYPES = ['text/plain', 'text/markdown'];

/** FNV-1a, 32-bit, over UTF-16 code units: tiny, deterministic, good enough spread for feature hashing. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function tokenize(text: string): string[] {
  return text
    .toLowerCase()
    .normalize('NFKD')
    .split(/[^a-z0-9]+/)
    .filter((t) => t.length >= 2);
}

/** Writes the hashed, L2-normalised features of `text` into `out` (length = bucket count). */
export function hashDocument(text: string, out: Float32Array): Float32Array {
  const buckets = out.length;
  out.fill(0);
  const tokens = tokenize(text);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    out[fnv1a(t) % buckets]! += 1;
    if (i + 1 < tokens.length) out[fnv1a(`${t} ${tokens[i + 1]}`) % buckets]! += 1;
  }
  let norm = 0;
  for (let i = 0; i < buckets; i++) norm += (out[i] as number) ** 2;
  if (norm > 0) {
    const inv = 1 / Math.sqrt(norm);
    for (let i = 0; i < buckets; i++) out[i]! *= inv;
  }
  return out;
}

/**
 * Extracts the note text; refuses (400) anything else. The input is `{"text"}`, `{"document": <DocumentReference>}`
 * or the DocumentReference itself. Every text attachment is read (a note split over several, or sent as plain text
 * and markdown, is one note; an identical rendition is read once); attachments must be inline (`attachment.data`,
 * base64): Triage never fetches an attachment `url` (no server-side requests on behalf of callers), and a text
 * attachment only at a url is refused rather than scored without. Non-text renditions (PDF, images) are skipped.
 */
export function documentText(input: unknown, maxChars: number): string {
  const fail = (detail: string): never => {
    throw new Problem('invalid_input', detail, { extensions: { errors: [{ pointer: '/input', detail }] } });
  };
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return fail('input must be {"text": "..."}, {"document": <FHIR DocumentReference>} or a DocumentReference');
  }
  let text: string;
  if ((input as { resourceType?: unknown }).resourceType !== undefined) {
    text = referenceText(input as Record<string, unknown>, fail);
  } else {
    const keys = Object.keys(input);
    if (keys.length !== 1 || !(keys[0] === 'text' || keys[0] === 'document')) {
      return fail('input must have exactly one of "text" or "document", or be a DocumentReference');
    }
    if ('text' in input) {
      if (typeof input.text !== 'string') return fail('input.text must be a string');
      text = input.text;
    } else text = referenceText((input as { document: unknown }).document, fail);
  }
  if (text.trim().length === 0) return fail('the document text is empty');
  if (text.length > maxChars) return fail(`the document text is longer than ${maxChars} characters`);
  return text;
}

/** The id of a DocumentReference given as a job's input (directly or wrapped), for the caller's correlation. */
export function documentId(input: unknown): string | undefined {
  const doc = (input as { document?: unknown } | null)?.document ?? input;
  const r = doc as { resourceType?: unknown; id?: unknown } | null;
  return r?.resourceType === 'DocumentReference' && typeof r.id === 'string' ? r.id.slice(0, 64) : undefined;
}

function referenceText(value: unknown, fail: (detail: string) => never): string {
  const doc = value as Record<string, unknown> | null;
  if (typeof doc !== 'object' || doc === null || doc.resourceType !== 'DocumentReference') {
    return fail('the document must be a FHIR DocumentReference');
  }
  // entered-in-error: the document never should have existed; scoring it would put a phantom note in the record
  if (doc.status === 'entered-in-error' || doc.docStatus === 'entered-in-error') {
    return fail('the DocumentReference is entered-in-error: it is not scored');
  }
  const content = Array.isArray(doc.content) ? (doc.content as unknown[]) : [];
  const texts: string[] = [];
  for (const [i, c] of content.entries()) {
    const attachment = (c as { attachment?: Record<string, unknown> } | null)?.attachment;
    if (!attachment) continue;
    const contentType = String(attachment.contentType ?? 'text/plain')
      .split(';')[0]
      ?.trim()
      .toLowerCase();
    if (!DOCUMENT_TEXT_TYPES.includes(contentType ?? '')) continue;
    if (typeof attachment.data !== 'string') {
      return fail(`content[${i}] is text without inline data (attachment urls are not fetched): send it as data`);
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(attachment.data.replace(/\s+/g, ''))) {
      return fail(`content[${i}].attachment.data is not base64`);
    }
    const text = Buffer.from(attachment.data, 'base64').toString('utf8');
    if (!texts.includes(text)) texts.push(text);
  }
  if (texts.length === 0) {
    return fail(
      `the DocumentReference needs a text attachment (${DOCUMENT_TEXT_TYPES.join(', ')}) with inline base64 data`,
    );
  }
  return texts.join('\n\n');
}
