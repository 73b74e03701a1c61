import type { Panel } from './charts.ts';

export type ReportKind = 'shadow' | 'monitoring';

/** Where a report's page and its pictures live (the chart files sit under the page's path). */
export const reportPath = (model: string, kind: ReportKind) =>
  kind === 'shadow' ? `/desk/models/${model}` : `/desk/models/${model}/monitoring`;

const HEADINGS: Record<ReportKind, string> = { shadow: 'shadow comparison', monitoring: 'monitoring' };

const EMPTY: Record<ReportKind, string> = {
  shadow: "No shadow version has been compared with this model's primary yet.",
  monitoring: 'No version of this model has been scored in this window yet.',
};

/** The windows a monitoring page can draw, and the one it draws by default. */
export const PICTURE_WINDOWS = ['hour', 'day', 'week'] as const;

/**
 * A model's pictures: each panel an SVG image with its summary as alt text and its numbers as a table. The images
 * are files of their own (`<img>`), so the page's CSP needs no inline style or script for them.
 */
export function ModelReports(props: { model: string; kind: ReportKind; panels: Panel[]; window?: string }) {
  const base = reportPath(props.model, props.kind);
  const query = props.window ? `?window=${props.window}` : '';
  return (
    <>
      <h1>
        {props.model}: {HEADINGS[props.kind]}
      </h1>
      <ReportNav model={props.model} current={props.kind} />
      {props.kind === 'monitoring' && (
        <nav aria-label="Window">
          Window:{' '}
          {PICTURE_WINDOWS.map((w) => (
            <>
              <a href={`${base}?window=${w}`} aria-current={w === props.window ? 'page' : undefined}>
                {w}
              </a>{' '}
            </>
          ))}
        </nav>
      )}
      {props.panels.length === 0 ? (
        <p>{EMPTY[props.kind]}</p>
      ) : (
        props.panels.map((p) => (
          <section aria-labelledby={`${p.id}-h`} class="panel">
            <h2 id={`${p.id}-h`}>{p.title}</h2>
            <img src={`${base}/charts/${p.id}.svg${query}`} alt={p.summary} id={`chart-${p.id}`} />
            <details>
              <summary>The numbers</summary>
              {p.rows.length === 0 ? (
                <p>Nothing to list yet.</p>
              ) : (
                <table>
                  <thead>
                    <tr>
                      {Object.keys(p.rows[0] ?? {}).map((k) => (
                        <th scope="col">{k}</th>
                      ))}
                    </tr>
                  </thead>
                  <tbody>
                    {p.rows.map((r) => (
                      <tr>
                        {Object.values(r).map((v) => (
                          <td>{String(v)}</td>
                        ))}
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </details>
          </section>
        ))
      )}
    </>
  );
}

/** Links between a model's report pages. */
export function ReportNav(props: { model: string; current?: ReportKind }) {
  return (
    <nav aria-label={`Reports of ${props.model}`}>
      {(['shadow', 'monitoring'] as const).map((k) => (
        <>
          <a href={reportPath(props.model, k)} aria-current={k === props.current ? 'page' : undefined}>
            {HEADINGS[k]}
          </a>{' '}
        </>
      ))}
    </nav>
  );
}
