import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Hl7Door } from '../src/ingress/hl7/door.ts';
import { assertModelAllowed } from '../src/platform/auth.ts';
import { Problem } from '../src/platform/errors.ts';
import { assertDeclaredLength, readCapped, requireRole } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

const HL7_TYPE = /^(x-application\/hl7-v2\+er7|application\/hl7-v2|text\/plain)\s*(;|$)/i;

/**
 * HL7v2 over HTTP for systems without MLLP: `POST /v1/hl7` with an ORU^R01 as the body (ER7, segments separated by
 * CR or LF) → the ACK as the body. 200 for AA and AE (the message was taken), 400 for AR; the model is the one MSH-5
 * names, among the HL7 door's models that this client may call. Transport problems (credentials, media type, size)
 * are problem+json as everywhere.
 */
export function hl7Routes(deps: AppDeps, models: readonly string[]) {
  const app = new Hono<AppEnv>();
  const door = new Hl7Door({ catalog: deps.catalog, sync: deps.sync, models, logger: deps.logger });
  app.post('/hl7', requireRole(deps, 'client'), async (c) => {
    const type = c.req.header('content-type');
    if (!type || !HL7_TYPE.test(type)) {
      throw new Problem('unsupported_media_type', 'content-type must be x-application/hl7-v2+er7 (or text/plain)');
    }
    assertDeclaredLength(c);
    const max = c.get('maxBodyBytes');
    const text = await readCapped(
      c.req.raw.body,
      max,
      () => new Problem('payload_too_large', `the body exceeds ${max} bytes`),
    );
    const principal = c.get('principal');
    const mayUse = (model: string) => {
      try {
        if (principal) assertModelAllowed(principal, model);
        return true;
      } catch {
        return false;
      }
    };
    // the request id (X-Request-Id of the answer) names the prediction for outcomes, as the MSH-10 control id does
    const { ack, code } = await door.handle(text, mayUse, c.get('requestId'), c.get('principal')?.id);
    return c.body(ack.toString(), code === 'AR' ? 400 : 200, {
      'content-type': 'x-application/hl7-v2+er7; charset=utf-8',
    });
  });
  return app;
}

/** The document's description of these routes (routes/openapi.ts). */
export const hl7Docs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/hl7',
    summary: 'Score an HL7v2 ORU^R01 message (the same door as MLLP): answered with an HL7 ACK (AA, AE, AR)',
    tag: 'ingress',
    auth: ['client'],
    bodyType: 'application/hl7-v2',
    responses: {
      200: { description: 'the ACK: AA with the score, or AE with the reason', type: 'application/hl7-v2' },
    },
    errors: ['invalid_request'],
  },
];
