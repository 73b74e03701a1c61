import { type Logger, pino } from 'pino';
import { stdoutBlocks } from './stdout-blocks.ts';

/**
 * stdout is written asynchronously in blocks of at least this many bytes (about 120 access-log lines): a write per
 * block rather than per line (see StdoutBlocks).
 */
const STDOUT_BLOCK_BYTES = 32 * 1024;
/** What is buffered is written at least this often, so a quiet gateway's lines still appear promptly. */
const STDOUT_FLUSH_MS = 200;

/** Loggers made by createLogger: their lines' shape is known, so the access log can build its own (accessLogWriter). */
const ownLoggers = new WeakSet<Logger>();

let isoMs = Number.NaN;
let isoText = '';
/**
 * The ISO timestamp of now, formatted once per millisecond: a busy gateway writes many lines in the same millisecond,
 * and toISOString costs about a microsecond. The same text pino's isoTime writes.
 */
export function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/**
 * JSON logs. Callers log identifiers (request id, key id, model, route pattern), never bodies; the redaction list is
 * the second line of defence should a body or a secret reach a log call anyway.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const logger = pino(
    {
      level,
      base: { service: 'triage' },
      timestamp: () => `,"time":"${isoNow()}"`,
      redact: {
        paths: [
          'authorization',
          '*.authorization',
          'headers.authorization',
          '*.headers.authorization',
          'headers["x-api-key"]',
          '*.headers["x-api-key"]',
          'apiKey',
          '*.apiKey',
          'secret',
          '*.secret',
          'instances',
          '*.instances',
          'input',
          '*.input',
          'body',
          '*.body',
        ],
        censor: '[redacted]',
      },
    },
    // stdout written asynchronously in blocks, at least every STDOUT_FLUSH_MS, and synchronously on exit
    // (process.exit, a fatal error, a signal's handler that exits)
    destination ?? stdoutBlocks({ blockBytes: STDOUT_BLOCK_BYTES, flushMs: STDOUT_FLUSH_MS }),
  );
  ownLoggers.add(logger);
  return logger;
}

/** The labels of an access-log line (also the request histogram's): identifiers only, never a body or a header. */
export interface AccessLogLabels {
  route: string;
  method: string;
  status: string;
  model: string;
  version: string;
  tier: string;
}

/** Writes one access-log line; `ms` is the request's duration in milliseconds. */
export type AccessLogWriter = (
  level: 'info' | 'warn',
  requestId: string,
  principal: string | undefined,
  labels: AccessLogLabels,
  ms: number,
) => void;

/** JSON string literal of `s`: as is when nothing in it needs escaping (the identifiers this logs), else JSON.stringify's. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
const jsonString = (s: string): string => (PLAIN.test(s) ? `"${s}"` : JSON.stringify(s));

/**
 * The access log: one line per request with the same fields, in the same order and shape, as
 * `logger.info({ requestId, principal, route, method, status, model, version, tier, ms }, 'request')` writes, built by
 * hand for a logger made by createLogger (pino's generic serialisation walks the object, and its redaction list, for
 * every request), written to that logger's destination, and only when the logger's level lets the line through.
 * Any other logger is logged through as above (a child without redaction: the fields are identifiers).
 */
export function accessLogWriter(logger: Logger): AccessLogWriter {
  if (!ownLoggers.has(logger)) {
    const child = logger.child({}, { redact: [] });
    return (level, requestId, principal, labels, ms) =>
      child[level]({ requestId, principal, ...labels, ms }, 'request');
  }
  const internals = logger as unknown as Record<symbol, unknown>;
  const stream = internals[pino.symbols.streamSym] as { write(line: string): unknown };
  const bindings = internals[pino.symbols.chindingsSym] as string; // ',"service":"triage"'
  const infoValue = logger.levels.values.info as number;
  const warnValue = logger.levels.values.warn as number;
  const infoStart = `{"level":${infoValue},"time":"`;
  const warnStart = `{"level":${warnValue},"time":"`;
  return (level, requestId, principal, labels, ms) => {
    const warn = level === 'warn';
    if ((warn ? warnValue : infoValue) < logger.levelVal) return;
    let line = `${warn ? warnStart : infoStart}${isoNow()}"${bindings},"requestId":${jsonString(requestId)}`;
    if (principal !== undefined) line += `,"principal":${jsonString(principal)}`;
    line +=
      `,"route":${jsonString(labels.route)},"method":${jsonString(labels.method)}` +
      `,"status":${jsonString(labels.status)},"model":${jsonString(labels.model)}` +
      `,"version":${jsonString(labels.version)},"tier":${jsonString(labels.tier)}` +
      `,"ms":${Number.isFinite(ms) ? ms : null},"msg":"request"}\n`;
    stream.write(line);
  };
}
