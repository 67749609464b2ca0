// Secrets: browse the KV mounts (v1 and v2), read, create, update and
// delete a secret; on KV v2 also list versions, read an older version,
// and delete or undelete a version. Paths (names) appear in the address
// bar, as in Vault's console; values never do.
//
//   /ui/vault/secrets                          the KV mounts
//   /ui/vault/secrets/<mount>/list/<folder/>   a folder
//   /ui/vault/secrets/<mount>/show/<path>      a secret (?version=N on v2)
//   /ui/vault/secrets/<mount>/create           a new secret (?path=<folder/>)
//   /ui/vault/secrets/<mount>/edit/<path>      a new version / new values

import { api, ApiError, encodePath, describeError } from '../api.js';
import { h, field, errorSlot, messageBox, heading, announce, facts, badge, when, replace, put } from '../dom.js';
import { checkSecretPath, checkSecretData } from '../validate.js';

const BASE = '/ui/vault/secrets';

function consoleUrl(mount, action, path = '', search = '') {
  const tail = path ? `/${encodePath(path)}` : '';
  return `${BASE}/${encodeURIComponent(mount)}/${action}${tail}${search}`;
}

function decodeParts(parts) {
  return parts.map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
}

async function kvMounts() {
  const answer = await api('GET', 'sys/mounts');
  const table = answer && answer.data ? answer.data : answer;
  const mounts = [];
  for (const [path, info] of Object.entries(table || {})) {
    if (!info || typeof info !== 'object' || !path.endsWith('/')) continue;
    const version = info.type === 'kv' ? (info.options && info.options.version === '2' ? 2 : 1) : null;
    mounts.push({ name: path.slice(0, -1), type: info.type, version, description: info.description || '' });
  }
  mounts.sort((a, b) => a.name.localeCompare(b.name));
  return mounts;
}

export function mount(ctx) {
  const parts = decodeParts(ctx.parts.filter((p, i) => p !== '' || i === ctx.parts.length - 1));
  const container = h('div', { 'data-test-secrets': true });
  put(ctx.main, container);
  let alive = true;

  function fail(err) {
    if (!alive) return;
    if (err instanceof ApiError && err.status === 403) {
      ctx.sessionEnded();
      return;
    }
    replace(container, heading('Secrets'), messageBox('error', h('p', { text: describeError(err) })));
  }

  const mountName = parts[0] || '';
  const action = parts[1] || 'list';
  const rest = parts.slice(2).join('/');

  (async () => {
    const mounts = await kvMounts();
    if (!alive) return;
    if (!mountName) {
      showMounts(mounts);
      return;
    }
    const mountInfo = mounts.find((m) => m.name === mountName);
    if (!mountInfo || !mountInfo.version) {
      replace(container, heading('Secrets'),
        messageBox('error', h('p', { text: `There is no KV mount at "${mountName}/".` })),
        h('p', {}, h('a', { href: BASE, text: 'All secret engines' })));
      return;
    }
    if (action === 'show') await showSecret(mountInfo, rest);
    else if (action === 'create') showEditor(mountInfo, null, ctx.search.get('path') || '');
    else if (action === 'edit') await editSecret(mountInfo, rest);
    else await showFolder(mountInfo, rest);
  })().catch(fail);

  function breadcrumbs(mountInfo, path) {
    const items = [h('li', {}, h('a', { href: BASE, text: 'Secrets' })),
      h('li', {}, h('a', { href: consoleUrl(mountInfo.name, 'list'), text: `${mountInfo.name}/` }))];
    const segments = path.split('/').filter(Boolean);
    let sofar = '';
    segments.forEach((segment, i) => {
      sofar += `${segment}/`;
      const last = i === segments.length - 1 && !path.endsWith('/');
      items.push(h('li', {}, last
        ? h('span', { 'aria-current': 'page', text: segment })
        : h('a', { href: consoleUrl(mountInfo.name, 'list', sofar), text: `${segment}/` })));
    });
    return h('nav', { 'aria-label': 'Breadcrumb', class: 'breadcrumbs' }, h('ol', {}, items));
  }

  function showMounts(mounts) {
    const kv = mounts.filter((m) => m.version);
    replace(container, 
      heading('Secrets'),
      h('p', { class: 'lead', text: 'Key/value secret engines on this cluster.' }),
      kv.length
        ? h('ul', { class: 'list', 'data-test-mounts': true }, kv.map((m) => h('li', {},
          h('a', { href: consoleUrl(m.name, 'list'), 'data-test-mount-link': m.name }, h('strong', { text: `${m.name}/` })),
          ' ', badge(`KV v${m.version}`, 'neutral'),
          m.description ? h('span', { class: 'help', text: ` ${m.description}` }) : null)))
        : messageBox('info', h('p', { text: 'There is no key/value mount yet. Enable one with: strongroom secrets enable -path=secret kv-v2, or POST /v1/sys/mounts/secret {"type":"kv-v2"}.' })),
    );
  }

  async function listKeys(mountInfo, folder) {
    const path = mountInfo.version === 2
      ? `${encodePath(mountInfo.name)}/metadata/${encodePath(folder)}`
      : `${encodePath(mountInfo.name)}/${encodePath(folder)}`;
    try {
      const answer = await api('GET', path, { query: { list: 'true' } });
      return (answer && answer.data && answer.data.keys) || [];
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return [];
      throw err;
    }
  }

  async function showFolder(mountInfo, folder) {
    const prefix = folder && !folder.endsWith('/') ? `${folder}/` : folder;
    const keys = await listKeys(mountInfo, prefix);
    if (!alive) return;
    replace(container, 
      breadcrumbs(mountInfo, prefix),
      heading(prefix ? `${mountInfo.name}/${prefix}` : `${mountInfo.name}/`),
      h('p', { class: 'help' }, badge(`KV v${mountInfo.version}`, 'neutral')),
      h('div', { class: 'actions' },
        h('a', {
          class: 'button primary', 'data-test-secret-create': true,
          href: consoleUrl(mountInfo.name, 'create', '', prefix ? `?path=${encodeURIComponent(prefix)}` : ''),
          text: 'Create secret',
        })),
      keys.length
        ? h('ul', { class: 'list', 'data-test-secret-list': true }, keys.map((key) => h('li', {},
          h('a', {
            href: key.endsWith('/') ? consoleUrl(mountInfo.name, 'list', prefix + key) : consoleUrl(mountInfo.name, 'show', prefix + key),
            'data-test-secret-link': prefix + key,
            text: key,
          }))))
        : h('p', { class: 'help', 'data-test-secret-list-empty': true, text: 'No secrets here yet.' }),
    );
  }

  async function readV2(mountInfo, path, version) {
    const base = encodePath(mountInfo.name);
    const query = version ? { version: String(version) } : undefined;
    let data = null;
    let versionMeta = null;
    try {
      const answer = await api('GET', `${base}/data/${encodePath(path)}`, { query });
      data = answer.data.data;
      versionMeta = answer.data.metadata;
    } catch (err) {
      // A deleted or destroyed version: 404 with its metadata in the body.
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      const meta = err.body && err.body.data && err.body.data.metadata;
      if (!meta) throw err;
      versionMeta = meta;
    }
    const metadata = (await api('GET', `${base}/metadata/${encodePath(path)}`)).data;
    return { data, versionMeta, metadata };
  }

  function valueTable(data) {
    let shown = false;
    const cells = [];
    const rows = Object.entries(data).map(([k, v]) => {
      const text = typeof v === 'string' ? v : JSON.stringify(v);
      const cell = h('code', { class: 'secret', 'data-test-secret-value-cell': k, text: '••••••••' });
      cells.push([cell, text]);
      return h('tr', { 'data-test-secret-row': k }, h('th', { scope: 'row', text: k }), h('td', {}, cell));
    });
    const toggle = h('button', {
      type: 'button', class: 'small', 'aria-pressed': 'false', 'data-test-secret-reveal': true, text: 'Show values',
      onclick: () => {
        shown = !shown;
        for (const [cell, text] of cells) cell.textContent = shown ? text : '••••••••';
        toggle.textContent = shown ? 'Hide values' : 'Show values';
        toggle.setAttribute('aria-pressed', String(shown));
      },
    });
    return h('div', { class: 'card' },
      h('div', { class: 'table-scroll' },
        h('table', { 'data-test-secret-data': true },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Key' }), h('th', { scope: 'col', text: 'Value' }))),
          h('tbody', {}, rows))),
      h('p', {}, toggle));
  }

  function confirmButton(label, question, testName, run) {
    const slot = h('span', { class: 'confirm' });
    const start = h('button', {
      type: 'button', class: 'danger', [`data-test-${testName}`]: true, text: label,
      onclick: () => {
        start.hidden = true;
        const yes = h('button', {
          type: 'button', class: 'danger', [`data-test-${testName}-confirm`]: true, text: `Yes, ${label.toLowerCase()}`,
          onclick: async () => {
            yes.disabled = true;
            try { await run(); } catch (err) { fail(err); }
          },
        });
        const no = h('button', {
          type: 'button', text: 'Cancel',
          onclick: () => { replace(slot); start.hidden = false; start.focus(); },
        });
        replace(slot, h('span', { role: 'alert', text: `${question} ` }), yes, ' ', no);
        yes.focus();
      },
    });
    return h('span', {}, start, slot);
  }

  async function showSecret(mountInfo, path) {
    const base = encodePath(mountInfo.name);
    if (mountInfo.version === 1) {
      let answer;
      try {
        answer = await api('GET', `${base}/${encodePath(path)}`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          notFound(mountInfo, path);
          return;
        }
        throw err;
      }
      if (!alive) return;
      replace(container, 
        breadcrumbs(mountInfo, path),
        heading(path, { 'data-test-secret-title': true }),
        valueTable(answer.data || {}),
        h('div', { class: 'actions' },
          h('a', { class: 'button', href: consoleUrl(mountInfo.name, 'edit', path), 'data-test-secret-edit': true, text: 'Edit secret' }),
          confirmButton('Delete secret', `Delete ${path}? KV version 1 keeps no copy.`, 'secret-delete', async () => {
            await api('DELETE', `${base}/${encodePath(path)}`);
            announce(`Deleted ${path}.`);
            ctx.navigate(consoleUrl(mountInfo.name, 'list', parentOf(path)));
          })));
      return;
    }
    const wanted = Number.parseInt(ctx.search.get('version') || '', 10) || null;
    let read;
    try {
      read = await readV2(mountInfo, path, wanted);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        notFound(mountInfo, path);
        return;
      }
      throw err;
    }
    if (!alive) return;
    const { data, versionMeta, metadata } = read;
    const version = versionMeta.version;
    const deleted = Boolean(versionMeta.deletion_time) || versionMeta.destroyed;
    const versions = Object.entries(metadata.versions || {})
      .map(([n, v]) => ({ n: Number(n), ...v }))
      .sort((a, b) => b.n - a.n);
    replace(container, 
      breadcrumbs(mountInfo, path),
      heading(path, { 'data-test-secret-title': true }),
      h('p', { class: 'help', 'data-test-secret-version': String(version) },
        `Version ${version} of ${metadata.current_version}`,
        version === metadata.current_version ? ' (current)' : '',
        ` · created ${when(versionMeta.created_time)}`),
      deleted
        ? messageBox('warning', h('p', { 'data-test-secret-deleted': true, text: versionMeta.destroyed
          ? `Version ${version} was destroyed: its data is gone.`
          : `Version ${version} was deleted at ${when(versionMeta.deletion_time)}. Undelete it to read it again.` }))
        : valueTable(data || {}),
      h('div', { class: 'actions' },
        h('a', { class: 'button', href: consoleUrl(mountInfo.name, 'edit', path), 'data-test-secret-edit': true, text: 'Create new version' }),
        !deleted ? confirmButton(`Delete version ${version}`, `Delete version ${version} of ${path}? It can be undeleted.`, 'secret-delete', async () => {
          await api('POST', `${base}/delete/${encodePath(path)}`, { body: { versions: [version] } });
          announce(`Deleted version ${version}.`);
          ctx.refresh();
        }) : null,
        deleted && !versionMeta.destroyed ? h('button', {
          type: 'button', 'data-test-secret-undelete': true, text: `Undelete version ${version}`,
          onclick: async () => {
            try {
              await api('POST', `${base}/undelete/${encodePath(path)}`, { body: { versions: [version] } });
              announce(`Version ${version} restored.`);
              ctx.refresh();
            } catch (err) { fail(err); }
          },
        }) : null),
      h('section', { 'aria-labelledby': 'versions-heading' },
        h('h2', { id: 'versions-heading', text: 'Versions' }),
        h('ol', { class: 'list versions', reversed: true, 'data-test-secret-versions': true }, versions.map((v) => h('li', { 'data-test-secret-version-item': String(v.n) },
          v.n === version
            ? h('strong', { 'aria-current': 'true', text: `Version ${v.n}` })
            : h('a', { href: consoleUrl(mountInfo.name, 'show', path, `?version=${v.n}`), 'data-test-secret-version-link': String(v.n), text: `Version ${v.n}` }),
          ` · ${when(v.created_time)} `,
          v.destroyed ? badge('destroyed', 'bad') : v.deletion_time ? badge('deleted', 'bad') : null,
          v.n === metadata.current_version ? badge('current', 'good') : null)))),
    );
  }

  function notFound(mountInfo, path) {
    replace(container, 
      breadcrumbs(mountInfo, path),
      heading(path),
      messageBox('info', h('p', { 'data-test-secret-not-found': true, text: `There is no secret at ${mountInfo.name}/${path}.` })),
      h('p', {}, h('a', { href: consoleUrl(mountInfo.name, 'create', '', `?path=${encodeURIComponent(path)}`), text: 'Create it' })));
  }

  async function editSecret(mountInfo, path) {
    const base = encodePath(mountInfo.name);
    let data = {};
    if (mountInfo.version === 2) {
      const read = await readV2(mountInfo, path, null);
      data = read.data || {};
    } else {
      data = (await api('GET', `${base}/${encodePath(path)}`)).data || {};
    }
    if (!alive) return;
    showEditor(mountInfo, path, '', data);
  }

  function showEditor(mountInfo, path, prefix, data = null) {
    const editing = path !== null;
    const pathField = field({
      label: 'Path',
      name: 'secret-path',
      value: editing ? path : prefix,
      help: `Relative to ${mountInfo.name}/, for example app/database. Use "/" for folders.`,
      attrs: { 'data-test-secret-path': true, readonly: editing },
    });
    const rowsBox = h('div', { class: 'kv-rows', 'data-test-secret-rows': true });
    const rows = [];
    let shown = false;

    function addRow(key = '', value = '') {
      const index = rows.length + 1;
      const keyInput = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', 'aria-label': `Key ${index}`, 'data-test-secret-key': true });
      const valueInput = h('input', { type: shown ? 'text' : 'password', autocomplete: 'off', spellcheck: 'false', 'aria-label': `Value ${index}`, 'data-test-secret-value': true });
      keyInput.value = key;
      valueInput.value = value;
      const row = { keyInput, valueInput, el: null };
      row.el = h('div', { class: 'kv-row' }, keyInput, valueInput,
        h('button', {
          type: 'button', class: 'small', 'aria-label': `Remove row ${index}`, text: 'Remove',
          onclick: () => {
            rows.splice(rows.indexOf(row), 1);
            row.el.remove();
            if (!rows.length) addRow();
          },
        }));
      rows.push(row);
      put(rowsBox, row.el);
      return row;
    }

    if (data && Object.keys(data).length) {
      for (const [k, v] of Object.entries(data)) addRow(k, typeof v === 'string' ? v : JSON.stringify(v));
    } else addRow();

    const error = errorSlot();
    const reveal = h('button', {
      type: 'button', class: 'small', 'aria-pressed': 'false', text: 'Show values',
      onclick: () => {
        shown = !shown;
        for (const row of rows) row.valueInput.type = shown ? 'text' : 'password';
        reveal.textContent = shown ? 'Hide values' : 'Show values';
        reveal.setAttribute('aria-pressed', String(shown));
      },
    });
    const save = h('button', { type: 'submit', class: 'primary', 'data-test-secret-save': true, text: 'Save' });

    async function onSubmit(event) {
      event.preventDefault();
      error.hide();
      pathField.clearError();
      const target = pathField.input.value.trim();
      const pathProblem = editing ? null : checkSecretPath(target);
      if (pathProblem) {
        pathField.showError(pathProblem);
        pathField.input.focus();
        return;
      }
      const checked = checkSecretData(rows.map((r) => ({ key: r.keyInput.value, value: r.valueInput.value })));
      if (checked.error) {
        error.show(checked.error);
        return;
      }
      save.disabled = true;
      try {
        if (mountInfo.version === 2) {
          await api('POST', `${encodePath(mountInfo.name)}/data/${encodePath(target)}`, { body: { data: checked.data } });
        } else {
          await api('POST', `${encodePath(mountInfo.name)}/${encodePath(target)}`, { body: checked.data });
        }
      } catch (err) {
        save.disabled = false;
        if (err instanceof ApiError && err.status === 403) {
          fail(err);
          return;
        }
        error.show(`Saving failed: ${describeError(err)}`);
        return;
      }
      for (const row of rows) row.valueInput.value = '';
      announce(`Saved ${target}.`);
      ctx.navigate(consoleUrl(mountInfo.name, 'show', target));
    }

    replace(container, 
      breadcrumbs(mountInfo, editing ? path : prefix),
      heading(editing ? `Edit ${path}` : 'Create secret'),
      h('form', { novalidate: true, method: 'post', 'data-test-secret-form': true, onsubmit: onSubmit },
        pathField.row,
        h('fieldset', {},
          h('legend', { text: 'Keys and values' }),
          rowsBox,
          h('p', {},
            h('button', { type: 'button', class: 'small', 'data-test-secret-add-row': true, text: 'Add row', onclick: () => addRow().keyInput.focus() }),
            ' ', reveal)),
        error.box,
        h('div', { class: 'actions' }, save,
          h('a', {
            class: 'button',
            href: editing ? consoleUrl(mountInfo.name, 'show', path) : consoleUrl(mountInfo.name, 'list', prefix),
            text: 'Cancel',
          }))));
  }

  return {
    unmount() {
      alive = false;
      for (const input of ctx.main.querySelectorAll('input')) input.value = '';
      replace(ctx.main);
    },
  };
}

function parentOf(path) {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i + 1);
}
