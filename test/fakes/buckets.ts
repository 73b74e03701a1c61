/**
 * The S3 and GCS fakes together, with the credentials each SDK finds through its own default chain: the AWS_*
 * variables, and a service account key file named by GOOGLE_APPLICATION_CREDENTIALS (whose key the GCS fake checks
 * signatures against).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { removeDir, tempDir } from '../support/models.ts';
import { GcsFake, serviceAccountKey } from './gcs-fake.ts';
import { S3Fake, TEST_CREDENTIALS } from './s3-fake.ts';

export interface BucketFakes {
  s3: S3Fake;
  gcs: GcsFake;
  /** stops both fakes and removes the key file */
  close(): Promise<void>;
}

export async function startBucketFakes(s3Buckets: string[], gcsBuckets: string[]): Promise<BucketFakes> {
  const s3 = await S3Fake.start(s3Buckets);
  const account = serviceAccountKey();
  const gcs = await GcsFake.start(gcsBuckets, { publicKey: account.publicKey, email: account.json.client_email });
  const credentialsDir = await tempDir('gcp-credentials');
  await writeFile(path.join(credentialsDir, 'key.json'), JSON.stringify(account.json), { mode: 0o600 });
  process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
  process.env.GOOGLE_APPLICATION_CREDENTIALS = path.join(credentialsDir, 'key.json');
  return {
    s3,
    gcs,
    async close() {
      await s3.close();
      await gcs.close();
      await removeDir(credentialsDir);
    },
  };
}
