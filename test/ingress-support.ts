/**
 * Helpers of the ingress tests: a gateway through the real composition root with FHIR servers configured, a SMART
 * client key pair, and the FHIR test export (test/fhir-support.ts) as the resource lines a FHIR server would serve.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { exportPKCS8, generateKeyPair } from 'jose';
import type { Logger } from 'pino';
import { writeExport } from './fhir-support.ts';
import { buildGateway, type TestGateway, type TestKeys } from './support/index.ts';

/** The one test gateway, with FHIR servers and HL7 models configured and the batch worker in process. */
export function buildIngressGateway(options: {
  prefix: string;
  keys: TestKeys;
  modelsDir: string;
  dataDir: string;
  fhirServers: unknown;
  hl7Models?: string[];
  logger?: Logger;
}): Promise<TestGateway> {
  return buildGateway({
    prefix: options.prefix,
    keys: options.keys,
    modelsDir: options.modelsDir,
    dataDir: options.dataDir,
    workers: ['batch'],
    ...(options.logger ? { logger: options.logger } : {}),
    config: {
      fhirServers: JSON.stringify(options.fhirServers),
      hl7: { models: options.hl7Models ?? ['news2'], mllpPort: undefined, mllpHost: '127.0.0.1' },
    },
  });
}

export async function smartKeyPair() {
  const { publicKey, privateKey } = await generateKeyPair('RS384', { extractable: true });
  return { publicKey, privatePem: await exportPKCS8(privateKey) };
}

/** The FHIR test export's resources (written to the client's area for file runs too): Observations in two files. */
export async function exportLines(dataDir: string): Promise<{ Patient: string[][]; Observation: string[][] }> {
  await writeExport(dataDir);
  const dir = path.join(dataDir, 'clients', 'client', 'export');
  const lines = async (f: string) =>
    (await readFile(path.join(dir, f), 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const observations = await lines('Observation.ndjson');
  const half = Math.ceil(observations.length / 2);
  return {
    Patient: [await lines('Patient.ndjson')],
    Observation: [observations.slice(0, half), observations.slice(half)],
  };
}
