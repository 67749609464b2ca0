// Unseal: one masked key share at a time with "X/Y keys provided", the
// unseal nonce, and a reset. On an auto seal the node unseals itself: the
// page says so and shows why the last attempt failed and when the next one
// is due (sys/auto-unseal-status), until the node is unsealed.

import { api, ApiError, describeError } from '../api.js';
import { h, field, errorSlot, messageBox, heading, announce, when, relative, replace, put } from '../dom.js';
import { checkKeyShare } from '../validate.js';

const POLL_MS = 2000;

export function mount(ctx) {
  let timer = null;
  let stopped = false;
  const auto = ctx.status.type !== 'shamir';

  const title = heading('Unseal Strongroom');
  const lead = h('p', { class: 'lead' });
  const autoBox = h('div', { 'data-test-auto-unseal': true, hidden: !auto });

  const key = field({
    label: auto ? 'Recovery Key Portion' : 'Unseal Key Portion',
    name: 'unseal-key',
    type: 'password',
    help: 'Enter one key share at a time, base64 or hex, as printed at initialization. Each share goes straight to this node and is not kept.',
    attrs: { 'data-test-shamir-input': true, autocomplete: 'off' },
  });
  const error = errorSlot();
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test-shamir-submit': true, text: 'Unseal' });
  const reset = h('button', {
    type: 'button', 'data-test-shamir-reset': true, text: 'Reset unseal progress',
    onclick: () => onReset(),
  });
  const bar = h('progress', { max: '1', value: '0', 'aria-label': 'Unseal progress', 'data-test-shamir-progress-bar': true });
  const progressText = h('span', { 'data-test-shamir-progress': true });
  const nonce = h('code', { 'data-test-unseal-nonce': true });
  const nonceLine = h('p', { class: 'help', hidden: true }, 'Unseal nonce: ', nonce);
  const progress = h('div', { class: 'progress' }, bar, ' ', progressText);
  const form = h('form', { novalidate: true, method: 'post', 'data-test-unseal-form': true, onsubmit: onSubmit },
    key.row, error.box, progress, nonceLine,
    h('div', { class: 'actions' }, submit, reset));

  put(ctx.main, title, lead, autoBox, form);

  function showProgress(status) {
    const t = status.t || 0;
    bar.max = Math.max(t, 1);
    bar.value = status.progress || 0;
    progressText.textContent = `${status.progress || 0}/${t} keys provided`;
    nonce.textContent = status.nonce || '';
    nonceLine.hidden = !status.nonce;
    reset.disabled = !status.progress;
  }

  function unsealed() {
    stopped = true;
    announce('The node is unsealed.');
    ctx.navigate('/ui/vault/auth');
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.hide();
    key.clearError();
    const text = key.input.value;
    const problem = checkKeyShare(text);
    if (problem) {
      key.showError(problem);
      key.input.focus();
      return;
    }
    submit.disabled = true;
    let status;
    try {
      status = await api('PUT', 'sys/unseal', { body: { key: text.trim() }, auth: false });
    } catch (err) {
      key.input.value = '';
      submit.disabled = false;
      const message = err instanceof ApiError && err.status === 400
        ? `That key was not accepted: ${err.message}`
        : describeError(err);
      error.show(message);
      await refresh();
      key.input.focus();
      return;
    }
    key.input.value = '';
    submit.disabled = false;
    if (!status.sealed) {
      unsealed();
      return;
    }
    showProgress(status);
    announce(`${status.progress} of ${status.t} keys provided.`);
    key.input.focus();
  }

  async function onReset() {
    error.hide();
    try {
      showProgress(await api('PUT', 'sys/unseal', { body: { reset: true }, auth: false }));
      announce('Unseal progress reset.');
    } catch (err) {
      error.show(describeError(err));
    }
  }

  function showAuto(info) {
    const children = [];
    if (info.state === 'sealed_by_operator') {
      children.push(messageBox('info',
        h('p', {}, `This node uses an ${info.seal_type} seal but was sealed by an operator, so it stays sealed. `,
          'Enter recovery keys below to unseal it, or restart it to let the seal unseal it.')));
    } else {
      children.push(h('p', { text: `This node uses an ${info.seal_type} seal and unseals itself: no keys are needed here.` }));
      if (info.last_error && info.last_error_kind !== 'not_initialized') {
        const next = info.next_attempt
          ? h('p', {}, 'Next attempt at ',
            h('time', { datetime: info.next_attempt, 'data-test-auto-unseal-next': true, text: when(info.next_attempt) }),
            ` (${relative(info.next_attempt)}).`)
          : h('p', { text: 'No further attempt is scheduled: restart the node once the seal works again.' });
        children.push(h('div', { class: 'message message-error', 'data-test-auto-unseal-error': true },
          h('h2', { text: 'Auto-unseal is failing' }),
          h('p', { class: 'error-text', 'data-test-auto-unseal-message': true, text: info.last_error }),
          h('p', { text: `Failing since ${when(info.unhealthy_since || info.last_error_time)}; ${info.failures} failed attempt${info.failures === 1 ? '' : 's'}.` }),
          next));
      } else {
        children.push(h('p', { class: 'help', text: 'Unsealing…' }));
      }
    }
    replace(autoBox, ...children);
    form.hidden = info.state !== 'sealed_by_operator';
  }

  async function refresh() {
    try {
      const status = await api('GET', 'sys/seal-status', { auth: false });
      if (stopped) return;
      if (!status.initialized) {
        stopped = true;
        ctx.navigate('/ui/vault/init');
        return;
      }
      if (!status.sealed) {
        unsealed();
        return;
      }
      lead.textContent = `${status.cluster_name || 'This node'} is sealed. While sealed it serves no secrets.`;
      showProgress(status);
      if (auto) showAuto(await api('GET', 'sys/auto-unseal-status', { auth: false }));
    } catch (err) {
      if (!stopped) error.show(describeError(err));
    }
  }

  function schedule() {
    if (stopped) return;
    timer = window.setTimeout(async () => {
      await refresh();
      schedule();
    }, POLL_MS);
  }

  if (auto) form.hidden = true;
  showProgress(ctx.status);
  lead.textContent = 'This node is sealed. While sealed it serves no secrets.';
  refresh().then(schedule);

  return {
    unmount() {
      stopped = true;
      window.clearTimeout(timer);
      key.input.value = '';
      replace(ctx.main);
    },
  };
}
