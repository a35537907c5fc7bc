// http/routes.ts matchRoute on its own (no server): /<prefix>/kms/xks/v1/health and /<prefix>/kms/xks/v1/keys/<id>/
// {metadata,encrypt,decrypt} (XKS spec "URIs"), the prefix handed back unchecked (the handler looks it up), anything else
// undefined (the handler's InvalidUriPathException). The query string is cut off by the caller before this.
import { describe, expect, it } from 'vitest';
import { matchRoute } from '../../src/http/routes.js';

const MARK = '/kms/xks/v1';
const key = (prefix: string, id: string, op: string) => `${prefix ? `/${prefix}` : ''}${MARK}/keys/${id}/${op}`;
const health = (prefix: string) => `${prefix ? `/${prefix}` : ''}${MARK}/health`;

describe('the four operations', () => {
  it('health', () => {
    expect(matchRoute('/store/kms/xks/v1/health')).toEqual({ prefix: 'store', operation: 'GetHealthStatus' });
  });

  it.each([
    ['metadata', 'GetKeyMetadata'],
    ['encrypt', 'Encrypt'],
    ['decrypt', 'Decrypt'],
  ])('keys/<id>/%s is %s', (op, operation) => {
    expect(matchRoute(`/store/kms/xks/v1/keys/foo/${op}`)).toEqual({ prefix: 'store', operation, keyId: 'foo' });
  });

  it('health carries no key id', () => {
    expect(matchRoute('/store/kms/xks/v1/health')).not.toHaveProperty('keyId');
  });
});

describe('prefixes', () => {
  it('none: the path starts with /kms/xks/v1 and the prefix is empty', () => {
    expect(matchRoute('/kms/xks/v1/health')).toEqual({ prefix: '', operation: 'GetHealthStatus' });
    expect(matchRoute('/kms/xks/v1/keys/foo/encrypt')).toEqual({ prefix: '', operation: 'Encrypt', keyId: 'foo' });
  });

  it('with slashes inside, handed back as they are', () => {
    expect(matchRoute('/a/b/c/kms/xks/v1/health')).toEqual({ prefix: 'a/b/c', operation: 'GetHealthStatus' });
    expect(matchRoute('/team-1/eu_west/kms/xks/v1/keys/k/decrypt')).toEqual({ prefix: 'team-1/eu_west', operation: 'Decrypt', keyId: 'k' });
  });

  it('unchecked here: whatever lies before /kms/xks/v1/ is the prefix (the handler refuses one it does not know)', () => {
    expect(matchRoute('//kms/xks/v1/health')).toEqual({ prefix: '', operation: 'GetHealthStatus' });
    expect(matchRoute('/a//b/kms/xks/v1/health')).toEqual({ prefix: 'a//b', operation: 'GetHealthStatus' });
    expect(matchRoute('/a/kms/xks/v1/health')!.prefix).toBe('a');
    expect(matchRoute('/a b%20c/kms/xks/v1/health')!.prefix).toBe('a b%20c');
    expect(matchRoute('/store/kms/xks/v2/kms/xks/v1/health')!.prefix, 'the first /kms/xks/v1/ ends it').toBe('store/kms/xks/v2');
  });

  it('the first /kms/xks/v1/ ends the prefix: a prefix cannot contain it (the config refuses such a prefix too)', () => {
    expect(matchRoute('/kms/xks/v1/kms/xks/v1/health')).toBeUndefined();
  });

  it('/kms/xks/v1/ must be a whole path segment', () => {
    expect(matchRoute('/storekms/xks/v1/health')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v1health')).toBeUndefined();
    expect(matchRoute('/store/KMS/xks/v1/health')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v2/health')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v1')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v1/')).toBeUndefined();
  });
});

describe('key ids', () => {
  it.each([1, 2, 127, 128])('of %i characters', (n) => {
    const id = 'k'.repeat(n);
    expect(matchRoute(key('p', id, 'encrypt'))).toEqual({ prefix: 'p', operation: 'Encrypt', keyId: id });
  });

  it('of 0 or 129 characters are not a route', () => {
    expect(matchRoute(key('p', '', 'encrypt'))).toBeUndefined();
    expect(matchRoute(key('p', 'k'.repeat(129), 'encrypt'))).toBeUndefined();
  });

  it('of every allowed character: A-Z a-z 0-9 . _ -', () => {
    const id = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
    expect(matchRoute(key('p', id, 'metadata'))!.keyId).toBe(id);
    // Dot segments are not resolved: "." and ".." are key ids like any other (the token has no such label: 404).
    expect(matchRoute(key('p', '..', 'metadata'))!.keyId).toBe('..');
    expect(matchRoute(key('p', '.', 'metadata'))!.keyId).toBe('.');
  });

  it.each(['a b', 'a%20b', 'a/b', 'a:b', 'a+b', 'a~b', 'a*b', 'a?b', 'a#b', 'a;b', 'a@b', 'a\\b', 'é', 'a\u0000b', 'a\nb'])('%j is not a key id', (id) => {
    expect(matchRoute(key('p', id, 'encrypt'))).toBeUndefined();
  });
});

describe('not a route', () => {
  it('without a leading slash, or empty', () => {
    expect(matchRoute('store/kms/xks/v1/health')).toBeUndefined();
    expect(matchRoute('kms/xks/v1/health')).toBeUndefined();
    expect(matchRoute('')).toBeUndefined();
    expect(matchRoute('/')).toBeUndefined();
    expect(matchRoute('http://host/store/kms/xks/v1/health')).toBeUndefined();
  });

  it('with a trailing slash', () => {
    expect(matchRoute('/store/kms/xks/v1/health/')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v1/keys/foo/encrypt/')).toBeUndefined();
  });

  it('with a query string: the caller cuts it off first', () => {
    expect(matchRoute('/store/kms/xks/v1/health?x=1')).toBeUndefined();
    expect(matchRoute('/store/kms/xks/v1/keys/foo/encrypt?')).toBeUndefined();
  });

  it.each([
    'keys/foo/sign',
    'keys/foo/Encrypt',
    'keys/foo/ENCRYPT',
    'keys/foo/describe',
    'keys/foo/',
    'keys/foo',
    'keys/foo/encrypt/decrypt',
    'keys//encrypt',
    'keys/encrypt',
    'key/foo/encrypt',
    'Keys/foo/encrypt',
    'keys/foo/health',
    'Health',
    'healthz',
    'health/foo',
    'keys/health',
    'metadata',
  ])('another operation: %s', (rest) => {
    expect(matchRoute(`/store/kms/xks/v1/${rest}`)).toBeUndefined();
  });
});

describe('length', () => {
  // KMS allows an XksProxyUriPath (prefix and /kms/xks/v1) of up to 128 characters and key ids of up to 128.
  const longestPrefix = 'p'.repeat(128 - '/'.length - MARK.length);
  const longestId = 'k'.repeat(128);

  it('the longest path KMS can send is a route (a 128-character URI path, a 128-character key id, metadata)', () => {
    const path = key(longestPrefix, longestId, 'metadata');
    expect(`/${longestPrefix}${MARK}`).toHaveLength(128);
    expect(path).toHaveLength(271);
    expect(matchRoute(path)).toEqual({ prefix: longestPrefix, operation: 'GetKeyMetadata', keyId: longestId });
    expect(matchRoute(key(longestPrefix, longestId, 'encrypt'))?.operation).toBe('Encrypt');
    expect(matchRoute(health(longestPrefix))?.prefix).toBe(longestPrefix);
  });

  it('a path longer than any KMS sends is refused before it is looked at', () => {
    const oneLonger = key(`${longestPrefix}p`, longestId, 'metadata');
    expect(oneLonger).toHaveLength(272);
    expect(matchRoute(oneLonger)).toBeUndefined();
    expect(matchRoute(health('p'.repeat(300)))).toBeUndefined();
    expect(matchRoute(key('p', 'k', 'encrypt').padStart(300, '/'))).toBeUndefined();
    expect(matchRoute(`/${'a/'.repeat(100_000)}kms/xks/v1/health`)).toBeUndefined();
  });

  it('paths of 256 characters, as before', () => {
    const prefix = 'p'.repeat(256 - health('').length - 1);
    expect(health(prefix)).toHaveLength(256);
    expect(matchRoute(health(prefix))).toEqual({ prefix, operation: 'GetHealthStatus' });
    const id = 'k'.repeat(128);
    const p2 = 'p'.repeat(256 - key('', id, 'decrypt').length - 1);
    expect(key(p2, id, 'decrypt')).toHaveLength(256);
    expect(matchRoute(key(p2, id, 'decrypt'))).toEqual({ prefix: p2, operation: 'Decrypt', keyId: id });
  });
});
