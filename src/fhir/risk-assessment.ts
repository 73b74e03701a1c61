import { hash } from 'node:crypto';
import type { Manifest } from '../registry/schema.ts';
import { SILENT_ACTION } from '../serving/refusals.ts';
import type { PatientRow } from './observations.ts';

/** Where Triage's own codes and extensions are named (one place, so a deployment can change it). */
export const TRIAGE_FHIR_BASE = 'https://triage.dev/fhir';
const RISK_PROBABILITY = 'http://terminology.hl7.org/CodeSystem/risk-probability';
// RCP NEWS2 bands → the FHIR risk-probability codes; `low-medium` (a single red score) has no faithful code: text only
const BAND_CODES: Record<string, string> = { low: 'low', medium: 'moderate', high: 'high' };

/** A resource id that is the same for the same run and patient, so a resumed run writes the same resource. */
function resourceId(runId: string, subject: string): string {
  return hash('sha256', `${runId}\0${subject}`, 'hex').slice(0, 64);
}

type Assessed = { runId: string; manifest: Manifest; version: string; asOf: number; row: PatientRow };

/** What every RiskAssessment of the gateway says: the patient, the model and version as the method, when, and who. */
function assessed(args: Assessed): Record<string, unknown> {
  const { manifest, version, row } = args;
  return {
    resourceType: 'RiskAssessment',
    id: resourceId(args.runId, row.id),
    status: 'final',
    method: {
      coding: [{ system: `${TRIAGE_FHIR_BASE}/models`, code: manifest.name, version, display: manifest.title }],
      text: `${manifest.title}, model ${manifest.name} version ${version}`,
    },
    subject: { reference: row.id },
    occurrenceDateTime: new Date(args.asOf).toISOString(),
    performer: { display: `${manifest.owner.team} (${manifest.owner.contact})` },
  };
}

/**
 * One prediction as a FHIR R4 RiskAssessment: the patient, when (the run's data cut-off), the resources the features
 * came from, the model and version as the method, the score, its band or probability and the approved threshold's
 * verdict, the accountable owner, and every value assumed rather than observed.
 */
export function riskAssessment(args: Assessed & { prediction: Record<string, unknown> }): Record<string, unknown> {
  const { manifest, row, prediction } = args;
  const out = manifest.output;
  if (out.kind !== 'score') throw new Error(`a ${out.kind} output has no RiskAssessment form`);
  const score = prediction[out.scoreName] as number;
  const verdict = prediction.verdict as string;
  const isProbability = out.min === 0 && out.max === 1;
  const band = out.extras.find((e) => e.kind === 'label');
  const bandValue = band ? (prediction[band.as] as string | undefined) : undefined;
  const comparison = `${out.scoreName} ${score} ${prediction.aboveThreshold ? '≥' : '<'} approved threshold ${out.threshold}`;
  const assumed = row.assumed ?? [];
  return {
    ...assessed(args),
    basis: (row.basis ?? []).map((reference) => ({ reference })),
    prediction: [
      {
        outcome: { text: verdict },
        ...(isProbability ? { probabilityDecimal: score } : {}),
        ...(bandValue
          ? {
              qualitativeRisk: {
                ...(BAND_CODES[bandValue]
                  ? { coding: [{ system: RISK_PROBABILITY, code: BAND_CODES[bandValue] }] }
                  : {}),
                text: bandValue,
              },
            }
          : {}),
        rationale: `${comparison}: ${verdict}`,
      },
    ],
    extension: [
      { url: `${TRIAGE_FHIR_BASE}/StructureDefinition/score`, valueDecimal: score },
      { url: `${TRIAGE_FHIR_BASE}/StructureDefinition/threshold`, valueDecimal: out.threshold },
      {
        url: `${TRIAGE_FHIR_BASE}/StructureDefinition/above-threshold`,
        valueBoolean: prediction.aboveThreshold === true,
      },
      ...assumed.map((a) => ({
        url: `${TRIAGE_FHIR_BASE}/StructureDefinition/assumed`,
        extension: [
          { url: 'feature', valueString: a.feature },
          { url: 'value', valueString: String(a.value) },
          { url: 'reason', valueString: a.reason },
        ],
      })),
    ],
    ...(assumed.length > 0
      ? {
          note: [
            {
              text: `Assumed, not observed: ${assumed.map((a) => `${a.feature} = ${a.value} (${a.reason})`).join('; ')}`,
            },
          ],
        }
      : {}),
  };
}

/**
 * The FHIR door's answer for a model in silent deployment: the assessment was made (and recorded for monitoring and
 * outcomes) but no score is shown, so the resource names the patient, the method and when, carries no prediction,
 * and says what to do instead in its note.
 */
export function silentRiskAssessment(args: Assessed): Record<string, unknown> {
  return {
    ...assessed(args),
    note: [{ text: SILENT_ACTION }],
  };
}
