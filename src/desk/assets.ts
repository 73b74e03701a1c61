/**
 * The desk's one stylesheet and one script, served from the gateway itself so the pages' CSP can forbid inline code
 * and every other origin. The script only adds keyboard shortcuts: every page works without it.
 */
export const DESK_CSS = `
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1a1a1a; background: #fff; }
header { display: flex; justify-content: space-between; align-items: center; padding: .5rem 1rem; background: #0b3d63; color: #fff; }
header a, header span { color: #fff; }
.brand { font-weight: 700; text-decoration: none; }
main { max-width: 60rem; margin: 1rem auto; padding: 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ccc; }
caption { text-align: left; color: #444; padding: .25rem 0; }
.note { white-space: pre-wrap; background: #f5f5f0; border-left: 4px solid #0b3d63; padding: .75rem; font: inherit; }
.error { background: #fde8e8; border: 2px solid #a30000; color: #6b0000; padding: .5rem .75rem; }
.flag { color: #a30000; }
.inline { display: inline-flex; gap: .5rem; align-items: center; }
.choice { display: block; margin: .2rem 0; }
fieldset { margin: .75rem 0; border: 1px solid #999; }
textarea, input[type=password], input[type=number] { display: block; width: 100%; max-width: 40rem; font: inherit; }
button { font: inherit; padding: .3rem .9rem; }
dt { font-weight: 600; } dd { margin: 0 0 .4rem 1rem; }
:focus-visible { outline: 3px solid #f0a000; outline-offset: 2px; }
`;

export const DESK_JS = `
document.addEventListener('keydown', (e) => {
  const form = document.getElementById('decide');
  if (form && e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); return; }
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || (t && /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  if (form) {
    const choice = { a: 'approve', x: 'reject', m: 'amend' }[e.key];
    if (!choice) return;
    e.preventDefault();
    form.querySelector('input[name=decision][value=' + choice + ']').checked = true;
    const next = choice === 'amend' ? form.querySelector('input[name^="output."]') : null;
    (next || document.getElementById('reason')).focus();
  } else if (e.key === 'o') {
    const first = document.querySelector('#queue a[data-row="0"]');
    if (first) { e.preventDefault(); first.click(); }
  }
});
`;
