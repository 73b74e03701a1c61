import { type Logger, pino } from 'pino';

/**
 * JSON logs. Callers log identifiers (request id, key id, model, route pattern), never bodies; the redaction list is
 * the second line of defence should a body or a secret reach a log call anyway.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'triage' },
      timestamp: pino.stdTimeFunctions.isoTime,
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
    // stdout written asynchronously: lines that arrive while a write is out go together in the next one, so a busy
    // gateway makes a write per batch of lines rather than a syscall per request (flushed on exit by pino)
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
