/**
 * WWW-Authenticate parsing (RFC 7235 §4.1, RFC 6750 §3): one or more challenges, each a scheme and
 * auth-params; quoted values may contain commas (`scope="repository:a:pull,push"`) and escapes.
 */

export interface Challenge {
  /** Lower-case scheme: "bearer", "basic", ... */
  scheme: string;
  /** Parameter names lower-cased. */
  params: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;

/** Parses a WWW-Authenticate header value into challenges; a malformed tail is ignored. */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let current: Challenge | undefined;
  let s = header;
  for (;;) {
    s = s.replace(/^[\s,]+/, '');
    const tok = TOKEN.exec(s);
    if (tok === null) break;
    const word = tok[0];
    s = s.slice(word.length).replace(/^\s+/, '');
    if (!s.startsWith('=') || current === undefined) {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
      continue;
    }
    s = s.slice(1).replace(/^\s+/, '');
    let value = '';
    if (s.startsWith('"')) {
      let i = 1;
      for (; i < s.length && s[i] !== '"'; i++) {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        value += s[i];
      }
      s = s.slice(i + 1);
    } else {
      value = /^[^\s,]*/.exec(s)?.[0] ?? '';
      s = s.slice(value.length);
    }
    current.params[word.toLowerCase()] = value;
  }
  return out;
}
