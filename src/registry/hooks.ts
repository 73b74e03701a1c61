import { z } from 'zod';

/** The CDS Hooks this gateway can answer: both carry `context.patientId`, which is all a bedside score needs. */
export const cdsHooks = ['patient-view', 'order-sign'] as const;
const indicator = z.enum(['info', 'warning', 'critical']);

/**
 * A model's CDS Hooks services (manifest `hooks`): one service per hook, its prefetch derived from the model's FHIR
 * mapping. The card's indicator is the owner's clinical choice, so it is declared here, never guessed: by the risk
 * band the model outputs (`band`), else by the approved threshold's verdict (`above` / `below`).
 */
export const hooksSchema = z
  .object({
    services: z
      .array(
        z
          .object({
            hook: z.enum(cdsHooks),
            title: z.string().min(1).optional(),
            description: z.string().min(1).optional(),
          })
          .strict(),
      )
      .min(1),
    /** readings older than this are not used at the bedside (a NEWS2 from last week's vitals is no NEWS2) */
    lookbackHours: z
      .number()
      .positive()
      .max(24 * 30),
    indicator: z
      .object({ band: z.record(z.string(), indicator).optional(), above: indicator, below: indicator })
      .strict(),
  })
  .strict();
export type Hooks = z.infer<typeof hooksSchema>;

interface ManifestShape {
  input: string;
  output: { kind: string; extras?: Array<{ kind: string; labels?: string[] }> };
  hooks?: Hooks | undefined;
}

/** Hooks need a feature model with a score (a card shows a score), one service per hook, and every band mapped. */
export function checkHooks(m: ManifestShape, ctx: z.RefinementCtx): void {
  const h = m.hooks;
  if (!h) return;
  const issue = (message: string, ...path: Array<string | number>) =>
    ctx.addIssue({ code: 'custom', message, path: ['hooks', ...path] });
  if (m.input !== 'features' || m.output.kind !== 'score') issue('only a features model with a score output has hooks');
  const seen = new Set<string>();
  h.services.forEach((s, i) => {
    if (seen.has(s.hook)) issue(`hook ${s.hook} is declared twice`, 'services', i, 'hook');
    seen.add(s.hook);
  });
  const labels = m.output.extras?.find((e) => e.kind === 'label')?.labels;
  if (h.indicator.band) {
    if (!labels) issue('the output has no band (label) to map', 'indicator', 'band');
    for (const l of labels ?? [])
      if (!(l in h.indicator.band)) issue(`band "${l}" has no indicator`, 'indicator', 'band');
  }
}
