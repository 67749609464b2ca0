// Sign in with a token. The token is checked with auth/token/lookup-self
// before it is kept, and then kept in this tab's session storage only.

import { api, ApiError, session, describeError } from '../api.js';
import { h, field, errorSlot, messageBox, heading, announce, replace, put } from '../dom.js';
import { checkToken } from '../validate.js';

export function mount(ctx) {
  const token = field({
    label: 'Token',
    name: 'token',
    type: 'password',
    help: 'Kept in this browser tab only, until you sign out or close the tab.',
    attrs: { 'data-test-token': true, autocomplete: 'off' },
  });
  const error = errorSlot();
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test-auth-submit': true, text: 'Sign in' });

  function nextPath() {
    const next = ctx.search.get('next') || '';
    // Only console paths: never follow a "next" to another origin.
    return /^\/ui\/vault\/[A-Za-z0-9/_.%-]*$/.test(next) && !next.includes('//') ? next : '/ui/vault/cluster';
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.hide();
    token.clearError();
    const problem = checkToken(token.input.value);
    if (problem) {
      token.showError(problem);
      token.input.focus();
      return;
    }
    const candidate = token.input.value.trim();
    submit.disabled = true;
    try {
      const answer = await api('GET', 'auth/token/lookup-self', { token: candidate });
      token.input.value = '';
      session.signIn(candidate);
      announce(`Signed in${answer && answer.data && answer.data.display_name ? ` as ${answer.data.display_name}` : ''}.`);
      ctx.navigate(nextPath());
    } catch (err) {
      submit.disabled = false;
      error.show(err instanceof ApiError && err.status === 403
        ? 'That token was not accepted: it is unknown, expired or revoked.'
        : describeError(err));
      token.input.focus();
    }
  }

  put(ctx.main, 
    heading('Sign in to Strongroom'),
    ctx.search.get('ended') ? messageBox('info', h('p', { text: 'Your session ended: the token is no longer valid. Sign in again.' })) : null,
    h('form', { novalidate: true, method: 'post', 'data-test-auth-form': true, onsubmit: onSubmit },
      h('p', { class: 'help', text: 'Method: Token' }),
      token.row, error.box,
      h('div', { class: 'actions' }, submit)));

  return {
    unmount() {
      token.input.value = '';
      replace(ctx.main);
    },
  };
}
