import { z } from 'zod';
import { isUcumUnit } from '../fhir/ucum.ts';
import { codeToken as token } from './ids.ts';

/** Observations that carry a feature: by any of `codes` (on Observation.code or a component's code). */
const observationSource = z
  .object({
    codes: z.array(token).min(1),
    /** quantities: the UCUM unit values are converted to before use (and before `above`) */
    unit: z.string().min(1).optional(),
    /** a quantity read as a boolean: true when the value, in `unit`, is greater than this */
    above: z.number().finite().optional(),
    /** coded values (valueCodeableConcept): `system|code` → the feature's value */
    answers: z.record(token, z.union([z.string().min(1), z.boolean()])).optional(),
  })
  .strict();

/**
 * How a feature is read from FHIR (manifest `features[].fhir`): from Observations, or from the Patient. A value not
 * found is missing, unless `assume` declares a value and the clinical reason it is safe to assume.
 */
export const fhirMappingSchema = z
  .object({
    observations: z.array(observationSource).min(1).optional(),
    /** `age`: whole years from Patient.birthDate at the run's asOf */
    patient: z.enum(['age']).optional(),
    assume: z
      .object({ value: z.union([z.number().finite(), z.boolean(), z.string()]), reason: z.string().min(10) })
      .strict()
      .optional(),
  })
  .strict();
export type FhirMapping = z.infer<typeof fhirMappingSchema>;

interface FeatureShape {
  type: 'number' | 'integer' | 'boolean' | 'enum';
  values?: string[];
  min?: number;
  max?: number;
  fhir?: FhirMapping;
}

/** Checks a feature's FHIR mapping against its type: the units exist, coded answers are values the feature takes. */
export function checkFhirMapping(f: FeatureShape, ctx: z.RefinementCtx): void {
  const m = f.fhir;
  if (!m) return;
  const issue = (message: string, ...path: Array<string | number>) =>
    ctx.addIssue({ code: 'custom', message, path: ['fhir', ...path] });
  const numeric = f.type === 'number' || f.type === 'integer';
  if (m.patient && m.observations) issue('read from the Patient or from Observations, not both', 'patient');
  if (m.patient === 'age' && !numeric) issue('age is a number', 'patient');
  m.observations?.forEach((s, i) => {
    if (s.unit !== undefined && !isUcumUnit(s.unit)) issue(`"${s.unit}" is not a UCUM unit`, 'observations', i, 'unit');
    const quantity = s.unit !== undefined;
    if (!quantity && !s.answers) issue('needs a unit (quantities) or answers (coded values)', 'observations', i);
    if (s.above !== undefined && (f.type !== 'boolean' || !quantity))
      issue('above reads a quantity as a boolean feature', 'observations', i, 'above');
    if (f.type === 'boolean' && quantity && s.above === undefined)
      issue('a quantity read as a boolean needs above', 'observations', i, 'above');
    if (quantity && !numeric && f.type !== 'boolean')
      issue(`a ${f.type} feature cannot take a quantity`, 'observations', i, 'unit');
    for (const [code, value] of Object.entries(s.answers ?? {})) {
      const fits =
        f.type === 'boolean' ? typeof value === 'boolean' : f.type === 'enum' && f.values?.includes(value as string);
      if (!fits)
        issue(`answer ${code} → ${JSON.stringify(value)} is not a value of this feature`, 'observations', i, 'answers');
    }
  });
  if (m.assume) {
    const v = m.assume.value;
    const fits = numeric
      ? typeof v === 'number' && v >= (f.min ?? -Infinity) && v <= (f.max ?? Infinity)
      : f.type === 'boolean'
        ? typeof v === 'boolean'
        : f.values?.includes(v as string);
    if (!fits) issue('the assumed value is not a valid value of this feature', 'assume', 'value');
  }
}
