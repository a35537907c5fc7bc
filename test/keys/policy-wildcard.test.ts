// Policy wildcards (`*`, `?`) match in time bounded by pattern x value length: a regular expression built from a
// pattern like `arn:aws:sts::*:assumed-role/*-*-*-admin/*` backtracked for 1.7 s on a 2,041-character principal, holding
// the event loop. Semantics: whole-string match, `*` any run (empty included), `?` exactly one character.
import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { wildcard } from '../../src/keys/policy.js';

/** The meaning, spelled as a regular expression: a reference for short inputs only. */
function reference(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 's');
}

describe('wildcard', () => {
  it.each([
    ['arn:aws:iam::111122223333:role/*', 'arn:aws:iam::111122223333:role/admin', true],
    ['arn:aws:iam::111122223333:role/*', 'arn:aws:iam::111122223333:user/admin', false],
    ['*', '', true],
    ['', '', true],
    ['', 'a', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['*-*-*-admin/*', 'x-y-z-admin/s', true],
    ['*-*-*-admin/*', 'x-y-admin/s', false],
    ['a*b*c', 'aXbYbZc', true],
    ['a*b*c', 'aXbYbZ', false],
    ['Encrypt', 'encrypt', false],
    ['a.b', 'aXb', false],
    ['**', 'anything', true],
    ['*?', '', false],
    ['a*', 'a\nb', true],
  ])('%j against %j: %s', (pattern, value, expected) => {
    expect(wildcard(pattern).test(value)).toBe(expected);
  });

  it('agrees with the regular-expression meaning on 5,000 random short cases', () => {
    const alphabet = ['a', 'b', '-', '*', '?'];
    const pick = (n: number, chars: string[]) => Array.from({ length: n }, () => chars[randomInt(chars.length)]).join('');
    for (let i = 0; i < 5_000; i++) {
      const pattern = pick(randomInt(8), alphabet);
      const value = pick(randomInt(10), ['a', 'b', '-', '*', '?']);
      expect(wildcard(pattern).test(value), `${pattern} / ${value}`).toBe(reference(pattern).test(value));
    }
  });

  it('answers a hostile principal at once (the regular expression took 1.7 s)', () => {
    const principal = `arn:aws:sts::111122223333:assumed-role/${'a-'.repeat(1_000)}/x`;
    expect(principal.length).toBeGreaterThan(2_000);
    const started = performance.now();
    expect(wildcard('arn:aws:sts::*:assumed-role/*-*-*-admin/*').test(principal)).toBe(false);
    // Generous: the one-pass match takes well under a millisecond; the backtracking one took seconds.
    expect(performance.now() - started).toBeLessThan(200);
  });
});
