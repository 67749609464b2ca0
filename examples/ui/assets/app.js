// The console's shell: routes /ui/vault/<page>/... to a page module,
// sends an operator where the node needs them (Initialize on a new node,
// Unseal on a sealed one, Sign in without a token), and keeps the header's
// navigation in step.
//
// A page module exports `mount(ctx)` and returns an object whose
// `unmount()` stops its timers and forgets anything secret it held; the
// shell calls it before every navigation.

import { api, session, describeError } from './api.js';
import { h, clear, messageBox, heading } from './dom.js';
import * as initPage from './pages/init.js';
import * as unsealPage from './pages/unseal.js';
import * as authPage from './pages/auth.js';
import * as clusterPage from './pages/cluster.js';
import * as secretsPage from './pages/secrets.js';

const PAGES = {
  init: { module: initPage, title: 'Initialize' },
  unseal: { module: unsealPage, title: 'Unseal' },
  auth: { module: authPage, title: 'Sign in' },
  cluster: { module: clusterPage, title: 'Cluster' },
  secrets: { module: secretsPage, title: 'Secrets' },
};
const PREFIX = '/ui/vault/';

let current = null;
let renderSeq = 0;

function route() {
  const path = window.location.pathname;
  const rest = path.startsWith(PREFIX) ? path.slice(PREFIX.length) : '';
  const [name, ...parts] = rest.split('/');
  return { name: PAGES[name] ? name : null, parts, search: new URLSearchParams(window.location.search) };
}

/** Goes to a console path (`/ui/vault/...`) without reloading. */
function navigate(path, { replace = false } = {}) {
  if (replace) window.history.replaceState(null, '', path);
  else window.history.pushState(null, '', path);
  render({ focus: true });
}

function where(status, wanted) {
  if (!status.initialized) return 'init';
  if (status.sealed) return 'unseal';
  if (!session.token()) return 'auth';
  if (!wanted || wanted === 'init' || wanted === 'unseal' || wanted === 'auth') return 'cluster';
  return wanted;
}

function showNav(status, page) {
  const nav = document.getElementById('nav');
  const signedIn = Boolean(session.token());
  nav.hidden = !signedIn || page === 'init';
  for (const link of nav.querySelectorAll('a[data-nav]')) {
    if (link.dataset.nav === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function render({ focus = false } = {}) {
  const seq = ++renderSeq;
  const main = document.getElementById('main');
  if (current) {
    const leaving = current;
    current = null;
    try { leaving.unmount(); } catch (_) { /* a page that fails to clean up must not block the next */ }
  }
  let status;
  try {
    status = await api('GET', 'sys/seal-status', { auth: false });
  } catch (err) {
    if (seq !== renderSeq) return;
    clear(main);
    main.append(heading('Strongroom'), messageBox('error', describeError(err)),
      h('p', {}, h('button', { type: 'button', onclick: () => render(), text: 'Try again' })));
    return;
  }
  if (seq !== renderSeq) return;
  const wanted = route();
  const page = where(status, wanted.name);
  if (page !== wanted.name) {
    const next = page === 'auth' && wanted.name && wanted.name !== 'auth'
      ? `${PREFIX}auth?next=${encodeURIComponent(window.location.pathname)}`
      : `${PREFIX}${page}`;
    window.history.replaceState(null, '', next);
  }
  const here = route();
  showNav(status, page);
  document.title = `${PAGES[page].title} · Strongroom`;
  clear(main);
  current = PAGES[page].module.mount({
    main,
    status,
    parts: here.parts,
    search: here.search,
    navigate,
    refresh: () => render({ focus: false }),
    sessionEnded,
  }) || { unmount() {} };
  const h1 = main.querySelector('h1');
  if (h1 && focus) h1.focus({ preventScroll: true });
}

/** Sends an operator whose token stopped working back to Sign in. */
function sessionEnded() {
  session.signOut();
  navigate(`${PREFIX}auth?ended=1`, { replace: true });
}

function start() {
  document.addEventListener('click', (event) => {
    const link = event.target.closest('a[href]');
    if (!link || link.hasAttribute('download') || event.defaultPrevented) return;
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(link.href, window.location.href);
    if (url.origin !== window.location.origin || !url.pathname.startsWith('/ui/')) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener('popstate', () => render());
  document.getElementById('sign-out').addEventListener('click', () => {
    session.signOut();
    navigate(`${PREFIX}auth`);
  });
  render();
}

start();
