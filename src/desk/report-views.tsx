import type { Panel } from './charts.ts';

/** A model's pictures: each panel an SVG image with its summary as alt text and its numbers as a table. */
export function ModelReports(props: { model: string; panels: Panel[] }) {
  return (
    <>
      <h1>{props.model}: shadow comparison</h1>
      {props.panels.length === 0 ? (
        <p>No shadow version has been compared with this model's primary yet.</p>
      ) : (
        props.panels.map((p) => (
          <section aria-labelledby={`${p.id}-h`} class="panel">
            <h2 id={`${p.id}-h`}>{p.title}</h2>
            <img src={`/desk/models/${props.model}/charts/${p.id}.svg`} alt={p.summary} id={`chart-${p.id}`} />
            <details>
              <summary>The numbers</summary>
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
            </details>
          </section>
        ))
      )}
    </>
  );
}
