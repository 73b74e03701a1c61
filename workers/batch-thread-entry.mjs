// Worker threads do not inherit tsx's loader on Node 20: register it, then load the TypeScript entry. Used only when
// running from the sources: the compiled build (dist/) starts its thread on the emitted JavaScript, without tsx.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.module);
