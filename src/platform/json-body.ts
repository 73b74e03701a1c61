import { Problem } from './errors.ts';

/** The request body as a JSON object, or a 400 saying what shape it should have (e.g. `{"instances": [...]}`). */
export function asJsonObject(body: unknown, shape = ''): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new Problem('invalid_request', `the body must be a JSON object${shape ? ` ${shape}` : ''}`);
  }
  return body as Record<string, unknown>;
}

/** Refuses fields outside `allowed`: a misspelt field must not be silently ignored. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key in body) {
    if (Object.hasOwn(body, key) && !allowed.includes(key)) {
      const names = allowed.map((a) => `"${a}"`).join(', ');
      throw new Problem(
        'invalid_request',
        `unknown field(s): only ${names} ${allowed.length === 1 ? 'is' : 'are'} allowed`,
      );
    }
  }
}

/** Deeper than any request Triage takes (a FHIR DocumentReference nests about 8 levels); far from the stack's limit. */
export const MAX_JSON_DEPTH = 64;

/**
 * Refuses JSON nested deeper than `maxDepth` before it is parsed: a body 10,000 levels deep parses, then overflows
 * the stack wherever it is next walked or serialised (a 500 far from the door). One pass over the text, skipping
 * string contents; the text is not yet known to be valid JSON, so this only counts brackets.
 */
export function assertJsonDepth(text: string, maxDepth = MAX_JSON_DEPTH): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c)
        i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) {
      inString = true;
    } else if (ch === 0x7b || ch === 0x5b) {
      if (++depth > maxDepth) {
        throw new Problem('invalid_request', `the body is nested deeper than ${maxDepth} levels`);
      }
    } else if (ch === 0x7d || ch === 0x5d) {
      depth--;
    }
  }
}
