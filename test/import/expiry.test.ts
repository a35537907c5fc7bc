// Expiry of imported material as pure functions of the record and a clock (the XKS path asks materialExpired before
// any sweep has destroyed the material), and KMS's rules for ExpirationModel and ValidTo.
import { describe, expect, it } from 'vitest';
import { expiredVersions, markMaterialGone } from '../../src/import/expiry.js';
import { checkExpiration } from '../../src/import/import-service.js';
import { KeyError } from '../../src/keys/errors.js';
import { materialExpired, readImport } from '../../src/keys/imported-material.js';
import type { KeyRecord } from '../../src/keys/key-record.js';

const T0 = new Date('2026-11-23T00:00:00.000Z');
const at = (hours: number) => new Date(T0.getTime() + hours * 3_600_000);
const kcv = 'AAAAAAAAAAAAAAAAAAAAAA';

function record(versions: Record<string, Record<string, unknown>>, state: KeyRecord['state'] = 'Enabled'): KeyRecord {
  const entries = Object.fromEntries(
    Object.entries(versions).map(([v, e]) => [v, { kcv, created: T0.toISOString(), imported: T0.toISOString(), expirationModel: 'KEY_MATERIAL_EXPIRES', ...e }]),
  );
  return { f: 1, state, usage: ['ENCRYPT', 'DECRYPT'], origin: 'EXTERNAL', created: T0.toISOString(), exportable: false, import: { f: 1, versions: entries } };
}

describe('materialExpired', () => {
  it('is false for keys without imported material', () => {
    expect(materialExpired(undefined, T0)).toBe(false);
    expect(materialExpired({ f: 1, state: 'Enabled', usage: [], origin: 'HSM', created: T0.toISOString(), exportable: false }, T0)).toBe(false);
  });

  it('turns true at ValidTo, before any sweep', () => {
    const r = record({ '1': { validTo: at(2).toISOString() } });
    expect(materialExpired(r, at(1))).toBe(false);
    expect(materialExpired(r, at(2))).toBe(true);
    expect(materialExpired(r, at(3))).toBe(true);
  });

  it('never for KEY_MATERIAL_DOES_NOT_EXPIRE; always once the material is gone', () => {
    expect(materialExpired(record({ '1': { expirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' } }), at(1e6))).toBe(false);
    expect(materialExpired(record({ '1': { expirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', gone: 'Deleted', goneAt: T0.toISOString() } }), T0)).toBe(true);
  });

  it('looks at the newest imported version by default, at any version when asked', () => {
    const r = record({ '1': { validTo: at(1).toISOString() }, '2': { validTo: at(5).toISOString() } });
    expect(materialExpired(r, at(2))).toBe(false);
    expect(materialExpired(r, at(2), 1)).toBe(true);
    expect(materialExpired(r, at(2), 2)).toBe(false);
    expect(expiredVersions(r, at(2))).toEqual([1]);
    expect(expiredVersions(r, at(6))).toEqual([1, 2]);
  });

  it('fails closed on damaged bookkeeping', () => {
    const r = { ...record({}), import: { f: 2, nonsense: true } } as KeyRecord;
    expect(materialExpired(r, T0)).toBe(true);
    expect(() => readImport(r)).toThrow(KeyError);
  });
});

describe('markMaterialGone', () => {
  it('sends the key to PendingImport when its newest material goes, keeping the version dates', () => {
    const r = record({ '1': { validTo: at(1).toISOString() }, '2': { validTo: at(9).toISOString() } });
    const created = new Date('2026-11-22T10:00:00.000Z');
    const oldGone = markMaterialGone(r, readImport(r), [1], 'Expired', at(2), () => created);
    expect(oldGone.state).toBe('Enabled');
    expect(readImport(oldGone).versions['1']).toMatchObject({ gone: 'Expired', goneAt: at(2).toISOString(), created: created.toISOString() });
    const allGone = markMaterialGone(oldGone, readImport(oldGone), [2], 'Deleted', at(3));
    expect(allGone.state).toBe('PendingImport');
    expect(expiredVersions(allGone, at(10))).toEqual([]);
  });

  it('leaves a key pending deletion in that state', () => {
    const r = record({ '1': {} }, 'PendingDeletion');
    expect(markMaterialGone(r, readImport(r), [1], 'Deleted', T0).state).toBe('PendingDeletion');
  });
});

describe('checkExpiration (KMS rules)', () => {
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as KeyError).code;
    }
    return 'ok';
  };
  it('KEY_MATERIAL_EXPIRES (the default) needs a ValidTo in the future, at most 365 days away', () => {
    expect(checkExpiration(undefined, at(1), T0)).toEqual({ model: 'KEY_MATERIAL_EXPIRES', validTo: at(1) });
    expect(code(() => checkExpiration(undefined, undefined, T0))).toBe('ValidationException');
    expect(code(() => checkExpiration('KEY_MATERIAL_EXPIRES', T0, T0))).toBe('ValidationException');
    expect(code(() => checkExpiration('KEY_MATERIAL_EXPIRES', at(365 * 24), T0))).toBe('ok');
    expect(code(() => checkExpiration('KEY_MATERIAL_EXPIRES', at(365 * 24 + 1), T0))).toBe('ValidationException');
  });
  it('KEY_MATERIAL_DOES_NOT_EXPIRE takes no ValidTo', () => {
    expect(checkExpiration('KEY_MATERIAL_DOES_NOT_EXPIRE', undefined, T0)).toEqual({ model: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
    expect(code(() => checkExpiration('KEY_MATERIAL_DOES_NOT_EXPIRE', at(1), T0))).toBe('ValidationException');
  });
});
