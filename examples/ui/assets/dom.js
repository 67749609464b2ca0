// Building the page without HTML strings: every element is created with
// createElement and every piece of text set with textContent, so nothing a
// server or a secret's name says can become markup (the page's policy
// enforces this with Trusted Types: assigning a string to innerHTML throws).

/** Creates an element. `attrs`: `class`, `text`, `for`, `on<event>`
 * (functions), booleans (`hidden`, `disabled`, ...), everything else as an
 * attribute (`data-test-*`, `aria-*`). Children: nodes, strings, arrays;
 * null and false are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'for') el.htmlFor = value;
    else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Removes every child of `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** Replaces the children of `el` (same child rules as `h`). */
export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Appends children to `el` (same child rules as `h`). */
export function put(el, ...children) {
  append(el, children);
  return el;
}

/** Tells screen-reader users what just happened (the polite live region). */
export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A fresh text node after a tick makes repeated messages heard again.
  window.setTimeout(() => { region.textContent = message; }, 50);
}

let fieldCount = 0;

/** A labelled input with its help text and an error slot, wired together
 * with aria-describedby. Returns { row, input, showError(msg), clearError() }. */
export function field({ label, name, type = 'text', help = '', value = '', attrs = {} }) {
  fieldCount += 1;
  const id = `${name}-${fieldCount}`;
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const input = h('input', {
    id, name, type,
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': help ? `${helpId} ${errorId}` : errorId,
    ...attrs,
  });
  if (value !== '') input.value = value;
  const error = h('p', { id: errorId, class: 'field-error', hidden: true, 'data-test-field-error': name });
  const row = h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    help ? h('p', { id: helpId, class: 'help', text: help }) : null,
    input,
    error);
  return {
    row,
    input,
    showError(message) {
      error.textContent = message;
      error.hidden = false;
      input.setAttribute('aria-invalid', 'true');
    },
    clearError() {
      error.textContent = '';
      error.hidden = true;
      input.removeAttribute('aria-invalid');
    },
  };
}

/** A message box; `kind` is 'error', 'warning', 'info' or 'success'.
 * Errors are announced at once (role=alert). */
export function messageBox(kind, ...content) {
  const role = kind === 'error' ? 'alert' : null;
  return h('div', { class: `message message-${kind}`, role }, ...content);
}

/** The error slot of a form: hidden until `show`. */
export function errorSlot() {
  const box = h('div', { class: 'message message-error', role: 'alert', hidden: true, 'data-test-message-error': true });
  return {
    box,
    show(message) {
      box.textContent = message;
      box.hidden = false;
    },
    hide() {
      box.textContent = '';
      box.hidden = true;
    },
  };
}

/** A definition list from [term, value] pairs; a value may be a node. */
export function facts(pairs, attrs = {}) {
  return h('dl', { class: 'facts', ...attrs },
    pairs.filter(Boolean).map(([term, value, test]) => h('div', { class: 'fact' },
      h('dt', { text: term }),
      h('dd', test ? { [`data-test-${test}`]: true } : {}, value))));
}

/** A small coloured label. */
export function badge(text, tone) {
  return h('span', { class: `badge badge-${tone}`, text });
}

/** A page heading that receives focus after navigation. */
export function heading(text, attrs = {}) {
  return h('h1', { tabindex: '-1', ...attrs, text });
}

/** Formats an RFC 3339 time for people, in their time zone. */
export function when(rfc3339) {
  if (!rfc3339) return '—';
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return String(rfc3339);
  return date.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/** "in 12 s", "3 min ago": the distance from now. */
export function relative(rfc3339, now = Date.now()) {
  const at = new Date(rfc3339).getTime();
  if (Number.isNaN(at)) return '';
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  const amount = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  if (abs < 1) return 'now';
  return seconds > 0 ? `in ${amount}` : `${amount} ago`;
}
