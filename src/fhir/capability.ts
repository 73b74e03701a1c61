import type { CatalogModel } from '../serving/catalog.ts';
import { TRIAGE_FHIR_BASE } from './risk-assessment.ts';

/** The models the FHIR door scores: bedside (sync) feature models with a score. */
export function fhirScoredModels(models: readonly CatalogModel[]): CatalogModel[] {
  return models.filter(
    (m) => m.tier === 'sync' && m.manifest.input === 'features' && m.manifest.output.kind === 'score',
  );
}

/** What `GET /fhir/metadata` answers: an R4 CapabilityStatement of the one operation served, and its models. */
export function capabilityStatement(models: readonly CatalogModel[], baseUrl: string): Record<string, unknown> {
  const scored = fhirScoredModels(models)
    .map((m) => `${m.name} (${m.manifest.title})`)
    .join(', ');
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-29',
    publisher: 'Triage',
    kind: 'instance',
    software: { name: 'Triage' },
    implementation: { description: 'Triage inference gateway: FHIR door', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'POST a Bundle of one patient’s Observations and Patient to RiskAssessment/$predict?model=<name>; the ' +
          'answer is a RiskAssessment (not stored), or an OperationOutcome: 422 when data are missing (no score: ' +
          'follow the standard protocol), 503 at capacity, 504 past the model’s deadline.',
        security: {
          description: 'Authorization: Bearer <API key or SMART on FHIR access token> on every interaction but this',
        },
        resource: [
          {
            type: 'RiskAssessment',
            operation: [
              {
                name: 'predict',
                definition: `${TRIAGE_FHIR_BASE}/OperationDefinition/RiskAssessment-predict`,
                documentation: `model = one of: ${scored || 'none served'}`,
              },
            ],
          },
        ],
      },
    ],
  };
}
