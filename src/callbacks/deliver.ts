import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { isInternalAddress } from './url-policy.ts';

export class DeliveryError extends Error {
  override name = 'DeliveryError';
  /** false when retrying cannot help (the address is forbidden) */
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean) {
    super(message);
    this.retryable = retryable;
  }
}

/**
 * Resolves through DNS, then refuses internal addresses unless allowed. Used as the socket's own lookup, so the
 * address checked is the address connected to (no rebinding between check and connect).
 */
function guardedLookup(allowInternal: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list = addresses as dns.LookupAddress[];
      const usable = allowInternal ? list : list.filter((a) => !isInternalAddress(a.address));
      if (usable.length === 0) {
        const refused = new Error(
          `${hostname} resolves only to private or link-local addresses`,
        ) as NodeJS.ErrnoException;
        refused.code = 'ETRIAGEFORBIDDEN';
        return callback(refused, '', 0);
      }
      if ((options as dns.LookupOptions).all) return callback(null, usable as never, 0);
      const first = usable[0] as dns.LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

/** POSTs a signed event; resolves on 2xx, throws DeliveryError otherwise. Never follows redirects. */
export function postEvent(
  url: URL,
  body: string,
  headers: Record<string, string>,
  options: { timeoutMs: number; allowInternal: boolean },
): Promise<number> {
  const client = url.protocol === 'https:' ? https : http;
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(literal) !== 0 && isInternalAddress(literal) && !options.allowInternal) {
    // an IP literal never goes through lookup: check it here
    return Promise.reject(new DeliveryError(`${literal} is a private or link-local address`, false));
  }
  return new Promise((resolve, reject) => {
    const req = client.request(
      url,
      {
        method: 'POST',
        lookup: guardedLookup(options.allowInternal),
        headers: {
          'content-type': 'application/cloudevents+json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'triage-callbacks/1',
          ...headers,
        },
        timeout: options.timeoutMs,
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(status);
          else reject(new DeliveryError(`receiver answered ${status}`, true));
        });
      },
    );
    req.on('timeout', () => req.destroy(new DeliveryError(`no answer within ${options.timeoutMs} ms`, true)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof DeliveryError) return reject(err);
      reject(
        new DeliveryError(
          err.code === 'ETRIAGEFORBIDDEN' ? err.message : `connection failed (${err.code ?? err.message})`,
          err.code !== 'ETRIAGEFORBIDDEN',
        ),
      );
    });
    req.end(body);
  });
}
