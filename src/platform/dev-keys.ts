import { constants } from 'node:fs';
import { mkdtemp, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';

export interface BannerTarget {
  /** where a person is watching, if anyone: the banner goes here only when it is a terminal */
  stream: { isTTY?: boolean; write(text: string): unknown };
  /** the folder a fresh private directory for the keys file is made in (default: the OS temp folder) */
  dir?: string;
}

/**
 * Hands the development keys to the person who started the gateway. A terminal gets them directly; anything else
 * (a file, a pipe, a log collector) would keep them wherever the stream goes, so they are written to a file only this
 * user can read, in a directory only this user can enter, and the log says where (the path, never the keys).
 */
export async function announceDevelopmentKeys(
  banner: string,
  target: BannerTarget,
  logger: Logger,
): Promise<{ shown: 'terminal' } | { shown: 'file'; file: string }> {
  if (target.stream.isTTY === true) {
    target.stream.write(banner);
    return { shown: 'terminal' };
  }
  const dir = await mkdtemp(path.join(target.dir ?? tmpdir(), 'triage-dev-keys-'));
  const file = path.join(dir, 'keys.txt');
  // exclusive and without following links: nobody can have planted the name in a directory made a moment ago, and
  // the mode is set at creation so there is no instant when the file is readable by others
  const handle = await open(
    file,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await handle.writeFile(banner);
  } finally {
    await handle.close();
  }
  logger.warn({ file }, 'development mode: stderr is not a terminal, so the development keys were written to a file');
  return { shown: 'file', file };
}
