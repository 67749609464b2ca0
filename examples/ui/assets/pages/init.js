// Initialize: choose key shares and threshold (recovery shares on an auto
// seal), then show the keys and the root token exactly once, with a
// download of the init response as JSON. Leaving the result view removes
// every key from the page and revokes the download.

import { api, describeError } from '../api.js';
import { h, field, errorSlot, messageBox, heading, announce, replace, put } from '../dom.js';
import { checkInitCounts } from '../validate.js';

export function mount(ctx) {
  const auto = ctx.status.type !== 'shamir';
  const noun = auto ? 'recovery key' : 'key';
  let result = null;
  let downloadUrl = null;

  const onBeforeUnload = (event) => {
    event.preventDefault();
    event.returnValue = '';
  };

  function forget() {
    result = null;
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    downloadUrl = null;
    window.removeEventListener('beforeunload', onBeforeUnload);
  }

  const shares = field({
    label: auto ? 'Recovery key shares' : 'Key shares',
    name: 'key-shares',
    value: '5',
    help: auto
      ? 'How many recovery keys to create (1 to 255). Recovery keys authorize root-token generation and rekeying; the seal unseals the node.'
      : 'How many key shares to split the root key into (1 to 255).',
    attrs: { inputmode: 'numeric', 'data-test-key-shares': true },
  });
  const threshold = field({
    label: auto ? 'Recovery key threshold' : 'Key threshold',
    name: 'key-threshold',
    value: '3',
    help: auto
      ? 'How many recovery keys are needed together (at most the number of shares).'
      : 'How many key shares are needed to unseal (at most the number of shares).',
    attrs: { inputmode: 'numeric', 'data-test-key-threshold': true },
  });
  const error = errorSlot();
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test-init-submit': true, text: 'Initialize' });

  async function onSubmit(event) {
    event.preventDefault();
    error.hide();
    shares.clearError();
    threshold.clearError();
    const checked = checkInitCounts(shares.input.value, threshold.input.value, noun);
    if (checked.errors.shares) shares.showError(checked.errors.shares);
    if (checked.errors.threshold) threshold.showError(checked.errors.threshold);
    if (checked.errors.shares || checked.errors.threshold) {
      (checked.errors.shares ? shares : threshold).input.focus();
      announce('The form has errors.');
      return;
    }
    const body = auto
      ? { recovery_shares: checked.shares, recovery_threshold: checked.threshold }
      : { secret_shares: checked.shares, secret_threshold: checked.threshold };
    submit.disabled = true;
    submit.textContent = 'Initializing…';
    try {
      result = await api('PUT', 'sys/init', { body, auth: false });
    } catch (err) {
      error.show(`Initialization failed: ${describeError(err)}`);
      submit.disabled = false;
      submit.textContent = 'Initialize';
      return;
    }
    let clusterName = null;
    try {
      const status = await api('GET', 'sys/seal-status', { auth: false });
      clusterName = status.cluster_name || null;
    } catch (_) { /* the name only decorates the file name */ }
    showResult(checked.threshold, clusterName);
  }

  const form = h('form', { novalidate: true, method: 'post', 'data-test-init-form': true, onsubmit: onSubmit },
    shares.row, threshold.row, error.box,
    h('div', { class: 'actions' }, submit));

  put(ctx.main, 
    heading('Initialize Strongroom'),
    h('p', { class: 'lead', text: 'Set up the root keys you will need to unseal this store and in an emergency. This is done once, for the whole cluster.' }),
    auto ? messageBox('info',
      h('p', {}, `This node uses an ${ctx.status.type} seal: it unseals itself, so no unseal keys are created. `,
        'Instead you get recovery keys, which authorize root-token generation and rekeying.')) : null,
    form);

  function showResult(needed, clusterName) {
    const keysB64 = auto ? result.recovery_keys_base64 : result.keys_base64;
    const keysHex = auto ? result.recovery_keys : result.keys;
    const count = keysB64.length;
    const what = auto ? 'recovery key' : 'key';
    window.addEventListener('beforeunload', onBeforeUnload);

    const fileText = JSON.stringify(result, null, 2);
    downloadUrl = URL.createObjectURL(new Blob([fileText], { type: 'application/json' }));
    const stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
    const name = (clusterName || window.location.host).replace(/[^A-Za-z0-9._-]+/g, '-');
    const fileName = `strongroom-cluster-${name}-${stamp}.json`;

    const tokenCode = h('code', { class: 'secret', 'data-test-root-token': true, text: '•'.repeat(24) });
    let tokenShown = false;
    const toggle = h('button', {
      type: 'button', class: 'small', 'aria-pressed': 'false', 'data-test-root-token-toggle': true, text: 'Show',
      onclick: () => {
        tokenShown = !tokenShown;
        tokenCode.textContent = tokenShown && result ? result.root_token : '•'.repeat(24);
        toggle.textContent = tokenShown ? 'Hide' : 'Show';
        toggle.setAttribute('aria-pressed', String(tokenShown));
      },
    });

    const advance = h('button', {
      type: 'button', class: 'primary', 'data-test-advance-button': true,
      text: auto ? 'Continue to Sign in' : 'Continue to Unseal',
      onclick: () => {
        forget();
        ctx.navigate(auto ? '/ui/vault/auth' : '/ui/vault/unseal');
      },
    });

    replace(ctx.main, 
      heading(count === 1
        ? `Strongroom has been initialized! Here is your ${what}.`
        : `Strongroom has been initialized! Here are your ${count} ${what}s.`, { 'data-test-init-result': true }),
      messageBox('warning',
        h('p', {}, h('strong', { text: 'This is the only time these keys and the root token are shown. ' }),
          'Download them or copy them to a safe place now: nobody, not even Strongroom, can show them again.'),
        h('p', {}, auto
          ? `Any ${needed} of the ${count} recovery keys together authorize root-token generation and rekeying. Give each one to a different person.`
          : `Any ${needed} of the ${count} keys together unseal the store; with fewer, the data cannot be read. Give each key to a different person.`)),
      h('section', { 'aria-labelledby': 'root-token-heading', class: 'card' },
        h('h2', { id: 'root-token-heading', text: 'Initial root token' }),
        h('p', { class: 'token-line' }, tokenCode, ' ', toggle),
        h('p', { class: 'help', text: 'The root token can do everything. Use it to set up access for people and applications, then revoke it.' })),
      h('section', { 'aria-labelledby': 'keys-heading' },
        h('h2', { id: 'keys-heading', text: auto ? 'Recovery keys' : 'Unseal keys' }),
        h('ol', { class: 'key-list' },
          keysB64.map((b64, i) => h('li', { class: 'card key-box', 'data-test-key-box': true },
            h('h3', { text: `${auto ? 'Recovery key' : 'Key'} ${i + 1}` }),
            h('dl', { class: 'facts' },
              h('div', { class: 'fact' }, h('dt', { text: 'Base64' }), h('dd', {}, h('code', { 'data-test-key-base64': true, text: b64 }))),
              h('div', { class: 'fact' }, h('dt', { text: 'Hex' }), h('dd', {}, h('code', { 'data-test-key-hex': true, text: keysHex[i] })))))))),
      h('div', { class: 'actions' },
        h('a', {
          class: 'button', href: downloadUrl, download: fileName, 'data-test-download-keys': true,
          text: 'Download keys',
        }),
        advance));
    announce(`Initialized. ${count} ${what}s and the root token are shown once.`);
    ctx.main.querySelector('h1').focus();
  }

  return {
    unmount() {
      forget();
      replace(ctx.main);
    },
  };
}
