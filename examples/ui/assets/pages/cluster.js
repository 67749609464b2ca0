// Status of this node and its cluster, refreshed every few seconds:
// seal-status, sys/leader, sys/ha-status (every node the active hears
// from), sys/seal-backend-status (each seal's health) and sys/key-status
// (the encryption key's term and when it was installed).

import { api, ApiError, describeError } from '../api.js';
import { h, heading, facts, badge, messageBox, when, relative, replace, put } from '../dom.js';

const REFRESH_MS = 5000;

export function mount(ctx) {
  let timer = null;
  let stopped = false;
  const updated = h('p', { class: 'help', 'data-test-cluster-updated': true });
  const body = h('div', { 'data-test-cluster': true });
  put(ctx.main, 
    heading('Cluster'),
    updated,
    body);

  async function optional(path, opts) {
    try {
      return await api('GET', path, opts);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403 && !(opts && opts.auth === false)) throw err;
      return { error: err };
    }
  }

  async function load() {
    const status = await api('GET', 'sys/seal-status', { auth: false });
    const [leader, seals, ha, keys] = await Promise.all([
      optional('sys/leader', { auth: false }),
      optional('sys/seal-backend-status', { auth: false }),
      status.sealed ? { error: null } : optional('sys/ha-status'),
      status.sealed ? { error: null } : optional('sys/key-status'),
    ]);
    return { status, leader, seals, ha, keys };
  }

  function yesNo(value) {
    return value ? 'yes' : 'no';
  }

  function nodeRows(data) {
    const { status, leader, ha } = data;
    const nodes = ha && Array.isArray(ha.nodes) ? ha.nodes : (ha && ha.data && ha.data.nodes) || null;
    if (nodes && nodes.length) {
      // Strongroom adds `sealed` to Vault's fields: false for a node that
      // echoes, true or null (not answering) for one that went silent.
      return nodes.map((node) => ({
        name: node.hostname || node.api_address,
        address: node.api_address,
        active: Boolean(node.active_node),
        sealed: node.sealed === true,
        silent: node.sealed === null,
        lastEcho: node.last_echo,
        version: node.version,
      }));
    }
    // No cluster view (sealed, or a server without sys/ha-status): this
    // node alone, as far as it knows itself.
    return [{
      name: 'this node',
      address: leader && leader.is_self ? leader.leader_address : window.location.origin,
      active: !status.sealed && (!leader || !leader.ha_enabled || leader.is_self),
      sealed: status.sealed,
      lastEcho: null,
      version: status.version,
      self: true,
    }];
  }

  function render(data) {
    const { status, leader, seals, keys } = data;
    const haEnabled = leader && !leader.error && leader.ha_enabled;
    const role = status.sealed ? 'sealed' : !haEnabled || leader.is_self ? 'active' : 'standby';
    const rows = nodeRows(data);
    const sealList = seals && !seals.error && Array.isArray(seals.backends) ? seals.backends : [];

    replace(body, 
      status.sealed ? messageBox('error',
        h('p', { 'data-test-cluster-sealed': true }, h('strong', { text: 'This node is sealed. ' }),
          'It serves no secrets until it is unsealed. ',
          h('a', { href: '/ui/vault/unseal', text: 'Unseal it' }))) : null,
      h('section', { class: 'card', 'aria-labelledby': 'node-heading' },
        h('h2', { id: 'node-heading', text: 'This node' }),
        facts([
          ['Sealed', status.sealed ? badge('sealed', 'bad') : badge('unsealed', 'good'), 'sealed'],
          ['Seal type', status.type, 'seal-type'],
          ['Version', `Strongroom ${status.version}`, 'version'],
          ['Storage', status.storage_type || '—', 'storage-type'],
          ['Cluster name', status.cluster_name || (status.sealed ? 'hidden while sealed' : '—'), 'cluster-name'],
          ['Cluster ID', status.cluster_id || (status.sealed ? 'hidden while sealed' : '—'), 'cluster-id'],
        ])),
      h('section', { class: 'card', 'aria-labelledby': 'ha-heading' },
        h('h2', { id: 'ha-heading', text: 'High availability' }),
        facts([
          // sys/leader answers 503 on a sealed HA node (as Vault's).
          ['HA mode', haEnabled ? 'enabled' : leader && leader.error ? (status.sealed ? 'unknown while sealed' : 'unknown') : 'disabled (single node)', 'ha-mode'],
          ['This node is', role, 'ha-role'],
          ['Active node address', haEnabled ? (leader.leader_address || 'unknown') : (status.sealed ? 'none while sealed' : window.location.origin), 'active-address'],
          leader && leader.active_time ? ['Active since', when(leader.active_time), 'active-time'] : null,
        ])),
      h('section', { class: 'card', 'aria-labelledby': 'nodes-heading' },
        h('h2', { id: 'nodes-heading', text: 'Nodes' }),
        h('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-labelledby': 'nodes-heading' },
          h('table', { class: 'stack', 'data-test-ha-nodes': true },
            h('thead', {}, h('tr', {},
              ['Node', 'API address', 'Role', 'Seal', 'Last heartbeat', 'Version'].map((c) => h('th', { scope: 'col', text: c })))),
            h('tbody', {}, rows.map((row) => h('tr', {
              'data-test-ha-node': row.address || row.name,
              'data-test-ha-node-role': row.sealed ? 'sealed' : row.active ? 'active' : row.silent ? 'unreachable' : 'standby',
            },
            h('th', { scope: 'row', text: row.name }),
            h('td', { 'data-label': 'API address' }, h('code', { text: row.address || '—' })),
            h('td', { 'data-label': 'Role' }, row.sealed ? badge('sealed', 'bad') : row.active ? badge('active', 'good')
              : row.silent ? badge('not answering', 'bad') : badge('standby', 'neutral')),
            h('td', { 'data-label': 'Seal', text: row.sealed ? 'sealed' : row.silent ? 'unknown' : 'unsealed' }),
            h('td', { 'data-label': 'Last heartbeat' }, row.active && !row.lastEcho ? 'is the active node'
              : row.lastEcho ? h('time', { datetime: row.lastEcho, title: when(row.lastEcho), text: relative(row.lastEcho) }) : '—'),
            h('td', { 'data-label': 'Version', text: row.version || '—' }))))))),
      h('section', { class: 'card', 'aria-labelledby': 'seals-heading' },
        h('h2', { id: 'seals-heading', text: 'Seals' }),
        sealList.length
          ? h('ul', { class: 'plain', 'data-test-seal-backends': true }, sealList.map((seal) => h('li', { 'data-test-seal-backend': seal.name },
            h('strong', { text: seal.name }),
            seal.type && seal.type !== seal.name ? ` (${seal.type})` : '',
            sealList.length > 1 && seal.priority ? `, priority ${seal.priority}` : '', ' ',
            seal.disabled ? badge('disabled', 'neutral') : seal.healthy ? badge('healthy', 'good') : badge('unhealthy', 'bad'),
            seal.unhealthy_since ? ` since ${when(seal.unhealthy_since)}` : '',
            seal.last_error ? h('p', { class: 'error-text', text: seal.last_error }) : null)))
          : h('p', { class: 'help', text: 'Seal health is not available from this node.' })),
      h('section', { class: 'card', 'aria-labelledby': 'key-heading' },
        h('h2', { id: 'key-heading', text: 'Encryption key' }),
        keys && !keys.error && keys.term !== undefined
          ? facts([
            ['Key term', String(keys.term), 'key-term'],
            ['Installed (last rotation)', when(keys.install_time), 'key-install-time'],
            keys.encryptions !== undefined ? ['Encryptions with this key', String(keys.encryptions), 'key-encryptions'] : null,
          ])
          : h('p', { class: 'help', text: status.sealed ? 'Not available while sealed.' : 'Not available with this token.' })),
    );
    updated.textContent = `Refreshed every ${REFRESH_MS / 1000} s; last at ${new Date().toLocaleTimeString()}.`;
  }

  async function tick() {
    try {
      const data = await load();
      if (!stopped) render(data);
    } catch (err) {
      if (stopped) return;
      if (err instanceof ApiError && err.status === 403) {
        stopped = true;
        ctx.sessionEnded();
        return;
      }
      replace(body, messageBox('error', h('p', { text: describeError(err) })));
    }
    if (!stopped) timer = window.setTimeout(tick, REFRESH_MS);
  }

  tick();
  return {
    unmount() {
      stopped = true;
      window.clearTimeout(timer);
      replace(ctx.main);
    },
  };
}
