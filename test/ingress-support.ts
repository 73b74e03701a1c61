/**
 * Helpers of the ingress tests: a gateway through the real composition root with FHIR servers configured, a SMART
 * client key pair, and the FHIR test export (test/fhir-support.ts) as the resource lines a FHIR server would serve.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { exportPKCS8, generateKeyPair } from 'jose';
import type { Logger } from 'pino';
import { composeGateway, type GatewayConfig } from '../src/compose.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
import type { BatchKeys, TestGateway } from './batch-support.ts';
import { REDIS_URL } from './batch-support.ts';
import { writeExport } from './fhir-support.ts';
import { httpCall } from './support.ts';

export async function buildIngressGateway(options: {
  prefix: string;
  keys: BatchKeys;
  modelsDir: string;
  dataDir: string;
  fhirServers: unknown;
  hl7Models?: string[];
  logger?: Logger;
}): Promise<TestGateway> {
  const config: GatewayConfig = {
    ...loadConfig({}),
    redisPrefix: options.prefix,
    workers: ['batch'],
    warmupRuns: 2,
    warmupPolicy: 'warn',
    onnxThreads: 1,
    maintenanceIntervalMs: 3_600_000,
    dataDir: options.dataDir,
    fhirServers: JSON.stringify(options.fhirServers),
    hl7: { models: options.hl7Models ?? ['news2'], mllpPort: undefined, mllpHost: '127.0.0.1' },
  };
  const gateway = await composeGateway({
    config,
    logger: options.logger ?? createLogger('silent'),
    redisUrl: REDIS_URL,
    keys: options.keys.store,
    models: await loadModels(options.modelsDir, 5000),
  });
  return {
    gateway,
    dataDir: options.dataDir,
    call: (method, url, key, body, headers = {}) => httpCall(gateway.app, method, url, key, body, headers),
    close: () => gateway.close(),
  };
}

export async function smartKeyPair() {
  const { publicKey, privateKey } = await generateKeyPair('RS384', { extractable: true });
  return { publicKey, privatePem: await exportPKCS8(privateKey) };
}

/** The FHIR test export's resources (written to the client's area for file runs too): Observations in two files. */
export async function exportLines(dataDir: string): Promise<{ Patient: string[][]; Observation: string[][] }> {
  await writeExport(dataDir);
  const dir = path.join(dataDir, 'clients', 'batch-client', 'export');
  const lines = async (f: string) =>
    (await readFile(path.join(dir, f), 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const observations = await lines('Observation.ndjson');
  const half = Math.ceil(observations.length / 2);
  return {
    Patient: [await lines('Patient.ndjson')],
    Observation: [observations.slice(0, half), observations.slice(half)],
  };
}
