// Checks on what operators type, before anything is sent. The server
// checks everything again; these give a clear message without a round
// trip and make sure nothing malformed (or a key pasted in the wrong box)
// leaves the page.

/** Parses a whole number of shares. Returns { value } or { error }. */
export function parseCount(text, what) {
  const trimmed = String(text ?? '').trim();
  if (trimmed === '') return { error: `Enter the ${what}: a whole number such as 5.` };
  if (!/^[0-9]+$/.test(trimmed)) {
    return { error: `The ${what} must be a whole number such as 5, not "${trimmed.slice(0, 20)}".` };
  }
  const value = Number.parseInt(trimmed, 10);
  if (value === 0) return { error: `The ${what} must be at least 1.` };
  if (value > 255) return { error: `The ${what} can be at most 255.` };
  return { value };
}

/**
 * Checks key shares and threshold together, with the limits the server
 * enforces (shares 1..255; threshold 2..shares, or 1 with a single share).
 * `noun` is "key" or "recovery key". Returns { shares, threshold, errors }
 * where errors has `shares` and/or `threshold` messages.
 */
export function checkInitCounts(sharesText, thresholdText, noun = 'key') {
  const errors = {};
  const shares = parseCount(sharesText, `number of ${noun} shares`);
  const threshold = parseCount(thresholdText, `${noun} threshold`);
  if (shares.error) errors.shares = shares.error;
  if (threshold.error) errors.threshold = threshold.error;
  if (!shares.error && !threshold.error) {
    if (threshold.value > shares.value) {
      errors.threshold = `The ${noun} threshold (${threshold.value}) cannot be larger than the number of ${noun} shares (${shares.value}).`;
    } else if (shares.value > 1 && threshold.value < 2) {
      errors.threshold = `With ${shares.value} ${noun} shares the threshold must be at least 2 (a threshold of 1 would let any single share unseal).`;
    }
  }
  return { shares: shares.value, threshold: threshold.value, errors };
}

/** Checks the text of one unseal or recovery key share: base64 or hex,
 * as `operator init` prints them. Returns an error message or null. */
export function checkKeyShare(text) {
  const key = String(text ?? '').trim();
  if (key === '') return 'Enter one key share (base64 or hex, as printed at initialization).';
  if (/\s/.test(key)) return 'A key share has no spaces or line breaks: enter one key at a time.';
  const hex = /^[0-9a-fA-F]+$/.test(key) && key.length % 2 === 0;
  const base64 = /^[A-Za-z0-9+/]+={0,2}$/.test(key) && key.length % 4 === 0;
  if (!hex && !base64) {
    return 'This is not a key share: a share is base64 (for example 44 characters ending in "=") or hex (66 digits).';
  }
  if (key.length < 16) return 'This key share is too short: copy the whole share.';
  if (key.length > 1024) return 'This key share is too long: enter one share at a time.';
  return null;
}

/** Checks a token typed at sign-in. Returns an error message or null. */
export function checkToken(text) {
  const token = String(text ?? '').trim();
  if (token === '') return 'Enter a token.';
  if (/\s/.test(token)) return 'A token has no spaces or line breaks.';
  if (token.length > 512) return 'This is too long to be a token.';
  return null;
}

/** Checks a secret's path inside a mount. Returns an error or null. */
export function checkSecretPath(text) {
  const path = String(text ?? '').trim();
  if (path === '') return 'Enter a path for the secret, for example app/database.';
  if (path.startsWith('/')) return 'The path is relative to the mount: leave out the leading "/".';
  if (path.endsWith('/')) return 'A path ending in "/" is a folder: add the secret\'s name after it.';
  if (path.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    return 'The path has an empty, "." or ".." segment.';
  }
  if (path.length > 512) return 'The path is too long.';
  return null;
}

/** Checks key/value rows of a secret. Returns { data, error }. */
export function checkSecretData(rows) {
  const data = {};
  let count = 0;
  for (const { key, value } of rows) {
    const k = String(key ?? '').trim();
    if (k === '' && String(value ?? '') === '') continue;
    if (k === '') return { error: 'Every value needs a key: fill in the key or clear the row.' };
    if (Object.prototype.hasOwnProperty.call(data, k)) return { error: `The key "${k}" appears twice.` };
    data[k] = String(value ?? '');
    count += 1;
  }
  if (count === 0) return { error: 'Add at least one key and value.' };
  return { data };
}
