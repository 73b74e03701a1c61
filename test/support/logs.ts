import type { Logger } from 'pino';
import { createLogger } from '../../src/platform/logger.ts';

/** A logger that keeps every line, for asserting what is (not) logged (no patient data, no keys). */
export function captureLogs(level = 'info'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger(level, { write: (line: string) => void lines.push(line) }), lines };
}
