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
