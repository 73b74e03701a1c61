import { randomUUID } from 'node:crypto';
import type { PatientRow } from '../fhir/observations.ts';
import { TRIAGE_FHIR_BASE } from '../fhir/risk-assessment.ts';
import type { Manifest } from '../registry/schema.ts';

export type Indicator = 'info' | 'warning' | 'critical';

export interface Card {
  uuid: string;
  summary: string;
  detail: string;
  indicator: Indicator;
  source: { label: string; topic: { system: string; code: string; display: string } };
  overrideReasons?: Array<{ system: string; code: string; display: string }>;
}

/** The reasons a clinician can give for overriding a score card: what feedback is counted by. */
export const OVERRIDE_SYSTEM = `${TRIAGE_FHIR_BASE}/CodeSystem/cds-override-reason`;
export const OVERRIDE_REASONS = [
  { code: 'clinical-assessment-differs', display: 'My clinical assessment differs' },
  { code: 'readings-not-current', display: 'The readings do not reflect the patient now' },
  { code: 'already-escalated', display: 'Already escalated or under review' },
].map((r) => ({ system: OVERRIDE_SYSTEM, ...r }));

const SUMMARY_MAX = 139; // CDS Hooks: "<140 characters"

function clip(text: string): string {
  return text.length <= SUMMARY_MAX ? text : `${text.slice(0, SUMMARY_MAX - 1)}…`;
}

function source(manifest: Manifest, version: string): Card['source'] {
  return {
    // the model, its version and the accountable team, where the clinician sees them
    label: `${manifest.title} · model ${manifest.name} v${version} · ${manifest.owner.team}`,
    topic: {
      system: `${TRIAGE_FHIR_BASE}/models`,
      code: manifest.name,
      display: `${manifest.name} version ${version}`,
    },
  };
}

/** The score card: its indicator is the manifest's for the risk band (or the threshold's verdict). */
export function scoreCard(args: {
  manifest: Manifest;
  title: string;
  version: string;
  row: PatientRow;
  prediction: Record<string, unknown>;
  gaps: string[];
}): Card {
  const { manifest, version, row, prediction } = args;
  const out = manifest.output;
  if (out.kind !== 'score' || !manifest.hooks) throw new Error('a score card needs a score output and hooks');
  const score = prediction[out.scoreName] as number;
  const isProbability = out.min === 0 && out.max === 1;
  const shown = isProbability ? `${Math.round(score * 100)}%` : String(score);
  const bandExtra = out.extras.find((e) => e.kind === 'label');
  const band = bandExtra ? (prediction[bandExtra.as] as string | undefined) : undefined;
  const { indicator: rule } = manifest.hooks;
  const indicator =
    (band !== undefined ? rule.band?.[band] : undefined) ?? (prediction.aboveThreshold ? rule.above : rule.below);
  const verdict = String(prediction.verdict);
  const summary = clip(`${args.title}: ${shown}${band ? ` (${band} risk)` : ''} · ${verdict}`);
  const lines = [
    `**${out.scoreName} ${shown}** ${prediction.aboveThreshold ? '≥' : '<'} approved threshold ${isProbability ? `${out.threshold * 100}%` : out.threshold}: **${verdict}**${band ? `; clinical risk **${band}**` : ''}.`,
  ];
  for (const extra of out.extras) {
    const v = prediction[extra.as];
    if (extra.kind === 'vector' && v && typeof v === 'object') {
      const parts = Object.entries(v as Record<string, number>).map(([k, n]) => `${k} ${n}`);
      lines.push(`Subscores: ${parts.join(', ')}.`);
    }
  }
  const used = Object.entries(row.values ?? {})
    .filter(([k]) => !(row.assumed ?? []).some((a) => a.feature === k))
    .map(([k, v]) => `${k} ${v}`);
  lines.push(`Readings used: ${used.join(', ')}.`);
  for (const a of row.assumed ?? []) lines.push(`Assumed, not observed: ${a.feature} = ${a.value} (${a.reason})`);
  if (args.gaps.length > 0) lines.push(`Not available: ${args.gaps.join('; ')}.`);
  if (manifest.disclaimer) lines.push(`_${manifest.disclaimer.trim()}_`);
  return {
    uuid: randomUUID(),
    summary,
    detail: lines.join('\n\n'),
    indicator,
    source: source(manifest, version),
    overrideReasons: OVERRIDE_REASONS,
  };
}

/** The card for no score: never silence, never a score built on a guess. */
export function noScoreCard(args: { manifest: Manifest; title: string; version: string; why: string[] }): Card {
  return {
    uuid: randomUUID(),
    summary: clip(`${args.title}: no score, follow the standard protocol`),
    detail: [
      `**No score**: ${args.manifest.name} could not score this patient. Assess and observe by the standard protocol.`,
      ...args.why.map((w) => `- ${w}`),
    ].join('\n\n'),
    indicator: 'warning',
    source: source(args.manifest, args.version),
  };
}
