import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Hl7Door } from './door.ts';

export interface MllpOptions {
  host: string;
  port: number;
  door: Hl7Door;
  logger: Logger;
  /** a frame larger than this closes the connection (a sender that never ends a frame must not fill memory) */
  maxMessageBytes?: number;
  /** an idle connection is closed after this */
  idleTimeoutMs?: number;
  maxConnections?: number;
}

const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;

/**
 * The MLLP listener (HL7v2 Minimal Lower Layer Protocol: each message framed VT … FS CR, each answered on the same
 * connection, in order). The framing is this small layer rather than @medplum/hl7's Hl7Connection/Hl7Server: that
 * one drops every message after an unparseable frame in the same read (it empties its buffer, then throws mid-loop),
 * listens on every interface, and bounds neither frames nor connections. Messages are parsed and answered with
 * @medplum/core's Hl7Message (through the door).
 */
export async function startMllp(o: MllpOptions): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const maxBytes = o.maxMessageBytes ?? 1024 * 1024;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setTimeout(o.idleTimeoutMs ?? 5 * 60_000, () => socket.destroy());
    let buffer: Buffer = Buffer.alloc(0);
    let queue = Promise.resolve();
    const answer = (frame: Buffer) => {
      queue = queue
        .then(() => o.door.handle(frame.toString('utf8')))
        .then((a) => {
          if (socket.writable) {
            socket.write(
              Buffer.concat([Buffer.from([VT]), Buffer.from(a.ack.toString(), 'utf8'), Buffer.from([FS, CR])]),
            );
          }
        })
        .catch(() => {
          socket.destroy();
        });
    };
    socket.on('data', (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      for (;;) {
        const start = buffer.indexOf(VT);
        if (start < 0) {
          buffer = Buffer.alloc(0); // bytes between frames (stray newlines) carry nothing
          return;
        }
        const end = buffer.indexOf(FS, start + 1);
        if (end < 0 || end - start > maxBytes) break;
        // FS without its CR yet: wait for the next byte; any other byte after FS is a broken frame, still answered
        if (end + 1 >= buffer.length) break;
        answer(buffer.subarray(start + 1, end));
        buffer = buffer.subarray(buffer[end + 1] === CR ? end + 2 : end + 1);
      }
      if (buffer.length > maxBytes + 2) {
        o.logger.warn({ bytes: buffer.length }, 'mllp frame too large: connection closed');
        socket.destroy();
      }
    });
  });
  server.maxConnections = o.maxConnections ?? 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.end();
      setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, 2000).unref();
      await closed;
    },
  };
}
