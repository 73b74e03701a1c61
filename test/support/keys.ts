/** The API keys every test gateway knows: one set, one id per principal, as the audit trail and metrics name them. */
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import { ApiKeyStore, hashKey } from '../../src/platform/auth.ts';

export interface TestKeys {
  /** client `client`, every model; callbacks to loopback, signed with `secrets.client` */
  client: string;
  /** client `other-client`, every model; callbacks to 127.0.0.1, its own secret */
  other: string;
  /** client `wild-client`, callbacks only to `*.example.org` */
  wildcard: string;
  /** client `news2-client`, only news2 */
  news2Only: string;
  /** client `deterioration-client`, only deterioration */
  deteriorationOnly: string;
  /** reviewer `reviewer` */
  reviewer: string;
  /** reviewer `reviewer-2` */
  reviewer2: string;
  /** admin `admin` */
  admin: string;
  /** the principal id of `admin`, as the audit trail names it */
  adminId: string;
  secrets: { client: string; other: string; wildcard: string };
  store: ApiKeyStore;
  /** the same keys as a TRIAGE_API_KEYS document (for worker processes) */
  yaml: string;
}

export function makeKeys(): TestKeys {
  const key = (role: string) => `trg_${role}_${randomBytes(16).toString('hex')}`;
  const secret = () => `whsec_${randomBytes(24).toString('base64')}`;
  const k = {
    client: key('c'),
    other: key('o'),
    wildcard: key('w'),
    news2Only: key('n'),
    deteriorationOnly: key('d'),
    reviewer: key('r'),
    reviewer2: key('r2'),
    admin: key('adm'),
    secrets: { client: secret(), other: secret(), wildcard: secret() },
  };
  const entries: ConstructorParameters<typeof ApiKeyStore>[0] = [
    {
      id: 'client',
      role: 'client',
      sha256: hashKey(k.client),
      models: ['*'],
      callbackHosts: ['127.0.0.1', 'localhost'],
      callbackSecret: k.secrets.client,
    },
    {
      id: 'other-client',
      role: 'client',
      sha256: hashKey(k.other),
      models: ['*'],
      callbackHosts: ['127.0.0.1'],
      callbackSecret: k.secrets.other,
    },
    {
      id: 'wild-client',
      role: 'client',
      sha256: hashKey(k.wildcard),
      models: ['*'],
      callbackHosts: ['*.example.org'],
      callbackSecret: k.secrets.wildcard,
    },
    { id: 'news2-client', role: 'client', sha256: hashKey(k.news2Only), models: ['news2'] },
    { id: 'deterioration-client', role: 'client', sha256: hashKey(k.deteriorationOnly), models: ['deterioration'] },
    { id: 'reviewer', role: 'reviewer', sha256: hashKey(k.reviewer), models: ['*'] },
    { id: 'reviewer-2', role: 'reviewer', sha256: hashKey(k.reviewer2), models: ['*'] },
    { id: 'admin', role: 'admin', sha256: hashKey(k.admin), models: ['*'] },
  ];
  return { ...k, adminId: 'admin', store: new ApiKeyStore(entries), yaml: YAML.stringify({ keys: entries }) };
}
