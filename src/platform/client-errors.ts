import { type Server, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { Problem, type ProblemCode } from './errors.ts';
import { SECURE_HEADERS } from './secure-headers.ts';

/** Node's codes for a request it could not read, and what the caller is told (never the bytes it sent). */
const REFUSALS: Record<string, { code: ProblemCode; detail: string }> = {
  HPE_HEADER_OVERFLOW: { code: 'headers_too_large', detail: 'the request line and headers exceed the limit' },
  ERR_HTTP_REQUEST_TIMEOUT: { code: 'request_timeout', detail: 'the request did not arrive in time' },
  HPE_INVALID_CONTENT_LENGTH: { code: 'invalid_header', detail: 'content-length must be a number' },
  HPE_UNEXPECTED_CONTENT_LENGTH: { code: 'invalid_header', detail: 'content-length and transfer-encoding together' },
};
const NOT_HTTP = { code: 'invalid_request', detail: 'the request is not valid HTTP/1.1' } as const;

/**
 * A request node:http cannot parse (a non-numeric Content-Length, a header line past the limit, bytes that are not
 * HTTP) never reaches the app: Node answered it with a bare status line and no body. It gets the problem+json every
 * other refusal has, with a stable code, then the connection closes (the parser cannot go on after an error). Like
 * Node's own handler, it answers only a connection that has not been answered on yet, and never echoes what was sent.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }) => {
    if (err.code === 'ECONNRESET' || !socket.writable || (socket.bytesWritten ?? 0) > 0) {
      socket.destroy();
      return;
    }
    const refusal = (err.code && REFUSALS[err.code]) || NOT_HTTP;
    const problem = new Problem(refusal.code, refusal.detail);
    const body = JSON.stringify(problem.toBody());
    const headers = [
      `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}`,
      ...Object.entries(SECURE_HEADERS).map(([k, v]) => `${k}: ${v}`),
      'content-type: application/problem+json',
      `content-length: ${Buffer.byteLength(body)}`,
      'connection: close',
    ];
    socket.end(`${headers.join('\r\n')}\r\n\r\n${body}`);
  });
}
