import type { Hl7Message, Hl7Segment } from '@medplum/core';

/**
 * An ORU^R01 read as the FHIR resources the batch tier's mapping already understands (src/fhir/observations.ts): the
 * PID as a Patient, each OBX as an Observation (code, value, UCUM unit, status, time). Scoring an HL7v2 message then
 * goes through the same manifest mapping as a FHIR export: the same codes, unit conversions, statuses and gaps.
 */

/** Why a message cannot be taken at all (AR), or taken but not scored (AE); HL7 table 0357 codes. */
export class Hl7Refusal extends Error {
  override name = 'Hl7Refusal';
  readonly ack: 'AE' | 'AR';
  readonly code: string;
  constructor(ack: 'AE' | 'AR', code: string, message: string) {
    super(message);
    this.ack = ack;
    this.code = code;
  }
}

/** The versions whose ORU^R01 and OBX layout this reads (2.3 onwards: OBX-14 time, OBX-11 status, CE/CWE codes). */
const VERSIONS = /^2\.(3|3\.1|4|5|5\.1|6|7|7\.1|8|8\.1|8\.2)$/;

// HL7 coding systems (table 0396) as FHIR system URIs; LOINC is the one the vital-sign mappings use
const SYSTEMS: Record<string, string> = {
  LN: 'http://loinc.org',
  SCT: 'http://snomed.info/sct',
  SNM: 'http://snomed.info/sct',
  UCUM: 'http://unitsofmeasure.org',
};

// OBX-11 result status (table 0085) → Observation.status: only final and corrected ones are used
const STATUS: Record<string, string> = {
  F: 'final',
  C: 'corrected',
  P: 'preliminary',
  R: 'preliminary',
  S: 'preliminary',
  I: 'registered',
  D: 'entered-in-error',
  W: 'entered-in-error',
  X: 'cancelled',
  U: 'final', // "results status change to final without retransmitting results"
};

/** A DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as ISO 8601; undefined when it is not one. */
export function hl7Time(value: string): string | undefined {
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$/.exec(value.trim());
  if (!m) return undefined;
  const [, y, mo = '01', d = '01', h = '00', mi = '00', s = '00', frac = '', zone] = m;
  // without a zone the sender's local time is unknown: read as UTC, the convention of most interface engines
  const offset = zone ? `${zone.slice(0, 3)}:${zone.slice(3)}` : 'Z';
  const iso = `${y}-${mo}-${d}T${h}:${mi}:${s}${frac}${offset}`;
  return Number.isNaN(Date.parse(iso)) ? undefined : iso;
}

function coding(segment: Hl7Segment, field: number, repetition = 0) {
  const code = segment.getComponent(field, 1, undefined, repetition);
  const system = segment.getComponent(field, 3, undefined, repetition);
  return code ? { code, system: SYSTEMS[system.toUpperCase()] ?? (system || undefined) } : undefined;
}

/** Both the identifier and the alternate identifier of a CE/CWE (LOINC may be either). */
function codings(segment: Hl7Segment, field: number) {
  const first = coding(segment, field);
  const altCode = segment.getComponent(field, 4);
  const altSystem = segment.getComponent(field, 6);
  const alt = altCode ? { code: altCode, system: SYSTEMS[altSystem.toUpperCase()] ?? altSystem } : undefined;
  return [first, alt].filter((c): c is NonNullable<typeof c> => c !== undefined);
}

/** The message's header checked: an ORU^R01 of a version this reads. AR otherwise. */
export function checkHeader(message: Hl7Message): {
  controlId: string;
  receivingApp: string;
  sendingApplication: string;
  sendingFacility: string;
} {
  const msh = message.getSegment('MSH');
  if (!msh) throw new Hl7Refusal('AR', '100', 'the message has no MSH segment');
  const type = `${msh.getComponent(9, 1)}^${msh.getComponent(9, 2)}`;
  if (type !== 'ORU^R01') throw new Hl7Refusal('AR', '200', `unsupported message type ${type.slice(0, 20)}`);
  const version = msh.getComponent(12, 1);
  if (!VERSIONS.test(version)) throw new Hl7Refusal('AR', '203', `unsupported HL7 version "${version.slice(0, 10)}"`);
  const controlId = msh.getField(10)?.toString() ?? '';
  if (!controlId) throw new Hl7Refusal('AR', '101', 'MSH-10 (message control id) is empty');
  return {
    controlId,
    receivingApp: msh.getComponent(5, 1),
    // the sender, as sent (components and all): a control id is unique only within it
    sendingApplication: msh.getField(3)?.toString() ?? '',
    sendingFacility: msh.getField(4)?.toString() ?? '',
  };
}

/**
 * The Patient and Observations of an ORU^R01. Every OBX becomes an Observation whatever its code (the mapping
 * decides which are used, and says why others were not); one without a usable value or time is reported, not dropped.
 */
export function oruResources(message: Hl7Message): {
  patientId: string;
  resources: Array<Record<string, unknown>>;
  notes: string[];
} {
  const pids = message.getAllSegments('PID');
  const pid = pids[0];
  if (!pid) throw new Hl7Refusal('AE', '101', 'the message has no PID segment: no patient to score');
  // one score per message: several patients' results must not be read as one patient's
  if (pids.length > 1) throw new Hl7Refusal('AR', '100', 'more than one PID: send one ORU^R01 per patient');
  // PID-3: the first identifier (CX.1); an empty one cannot be tied to a patient
  const patientId = pid.getComponent(3, 1) || pid.getComponent(2, 1);
  if (!patientId) throw new Hl7Refusal('AE', '101', 'PID-3 (patient identifier) is empty');
  const birth = pid.getComponent(7, 1);
  const birthDate = /^\d{8}/.test(birth) ? `${birth.slice(0, 4)}-${birth.slice(4, 6)}-${birth.slice(6, 8)}` : undefined;
  const subject = { reference: `Patient/${patientId}` };
  const resources: Array<Record<string, unknown>> = [
    { resourceType: 'Patient', id: patientId, ...(birthDate ? { birthDate } : {}) },
  ];
  const notes: string[] = [];
  // an OBX without its own time takes its order's (the OBR before it), never another order's
  let obrTime: string | undefined;
  let i = 0;
  for (const obx of message.segments) {
    if (obx.name === 'OBR') obrTime = hl7Time(obx.getComponent(7, 1));
    if (obx.name !== 'OBX') continue;
    const n = obx.getField(1)?.toString() || String(++i);
    const codes = codings(obx, 3);
    if (codes.length === 0) {
      notes.push(`OBX ${n}: no observation identifier`);
      continue;
    }
    const at = hl7Time(obx.getComponent(14, 1)) ?? obrTime;
    if (!at) {
      notes.push(`OBX ${n}: no observation time (OBX-14 or OBR-7)`);
      continue;
    }
    const rawStatus = obx.getComponent(11, 1).toUpperCase();
    const value = obxValue(obx);
    if (value === undefined) {
      notes.push(`OBX ${n}: value type "${obx.getComponent(2, 1).slice(0, 5)}" or its value cannot be read`);
      continue;
    }
    resources.push({
      resourceType: 'Observation',
      id: `obx-${n}`,
      status: STATUS[rawStatus] ?? 'unknown',
      code: { coding: codes },
      subject,
      effectiveDateTime: at,
      ...value,
    });
  }
  return { patientId, resources, notes };
}

function obxValue(obx: Hl7Segment): Record<string, unknown> | undefined {
  const type = obx.getComponent(2, 1).toUpperCase();
  if (type === 'NM' || type === 'SN') {
    // SN: comparator^num1 (a comparator like ">" is not a value to score with)
    const text = type === 'SN' ? obx.getComponent(5, 2) : obx.getComponent(5, 1);
    if (type === 'SN' && obx.getComponent(5, 1) !== '' && obx.getComponent(5, 1) !== '=') return undefined;
    if (!/^[-+]?(\d+\.?\d*|\.\d+)$/.test(text.trim())) return undefined;
    const unit = obx.getComponent(6, 1);
    const unitSystem = obx.getComponent(6, 3).toUpperCase();
    return {
      valueQuantity: {
        value: Number(text),
        unit,
        // units are UCUM codes when the sender says so or gives no system (the common case for vital signs)
        ...(unitSystem === '' || unitSystem === 'UCUM' ? { system: SYSTEMS.UCUM, code: unit } : {}),
      },
    };
  }
  if (type === 'CE' || type === 'CWE' || type === 'CNE') {
    const c = coding(obx, 5);
    return c ? { valueCodeableConcept: { coding: [c] } } : undefined;
  }
  return undefined;
}
