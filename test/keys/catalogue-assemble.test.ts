// keys/catalogue.ts `assemble` (and `uncommitted`, `allObjects`, `usageOf`) on hand-made token objects: no token, no
// server. What a label's objects make of an external key (docs/key-model.md): layout 2 material and its commit marker,
// candidates, stray markers, records and their revisions, layout 1 objects, adopted keys, AES objects of another size,
// two objects claiming one version (alternates when their CKA_IDs differ, a duplicate version when they are equal).
import { describe, expect, it } from 'vitest';
import { allObjects, assemble, uncommitted, usageOf, type ExternalKey } from '../../src/keys/catalogue.js';
import { commitId, materialId, recordId } from '../../src/keys/key-objects.js';
import { encodeRecord, type KeyRecord } from '../../src/keys/key-record.js';
import type { KeyObject, KeyType } from '../../src/hsm/key-store.js';
import { legacyCandidateId, legacyRecordId, legacyVersionId } from '../helpers/legacy-layout.js';

const LABEL = 'foo';
const NONCE_A = 'aaaaaaaaaaaaaaaaaaaaaaaa';
const NONCE_B = 'bbbbbbbbbbbbbbbbbbbbbbbb';
const NONCE_C = 'cccccccccccccccccccccccc';
const NONCE_D = 'dddddddddddddddddddddddd';
const T1 = new Date('2026-01-02T03:04:05Z');
const T2 = new Date('2026-02-03T04:05:06Z');
const STARTED_MS = Date.UTC(2026, 2, 4, 5, 6, 7, 891);
const GOOD_ATTRS = { encrypt: true, decrypt: true, sensitive: true, extractable: false, local: true, neverExtractable: true };

/** Each object gets its own handle, as a token numbers them (a pkcs11js handle is an 8-byte buffer). */
let nextHandle = 1;
function handle(): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(nextHandle++, 0);
  return h;
}

function object(keyType: KeyType | undefined, id: Buffer, extra: Partial<KeyObject> = {}): KeyObject {
  return { handle: handle(), label: LABEL, id, keyType, attrs: keyType === 'aes' ? { ...GOOD_ATTRS } : {}, ...extra };
}
const aes = (id: Buffer | string, extra: Partial<KeyObject> = {}) => object('aes', Buffer.isBuffer(id) ? id : Buffer.from(id), { valueLen: 32, ...extra });
const secret = (id: Buffer) => object('generic-secret', id);
/** Layout 2 material of `version` by writer `nonce`, and the marker that commits it. */
const material = (version: number, nonce: string, extra: Partial<KeyObject> = {}) => aes(materialId(version, STARTED_MS, nonce), extra);
/** The marker that commits `nonce`'s material of `version`, dated `at` (null: a marker without a date). */
const marker = (version: number, nonce: string, at: Date | null = T1) => secret(commitId(version, at ?? undefined, nonce));

function record(fields: Partial<KeyRecord> = {}): KeyRecord {
  return { f: 1, state: 'Enabled', usage: ['ENCRYPT', 'DECRYPT'], origin: 'HSM', created: '2026-01-02T03:04:05.000Z', exportable: false, ...fields };
}
const recordObject = (revision: number, fields: Partial<KeyRecord> = {}, nonce = NONCE_A) => secret(recordId(revision, encodeRecord(record(fields)), nonce));

function assembled(objects: KeyObject[]): ExternalKey {
  const key = assemble(LABEL, objects);
  expect(key, 'a key').toBeDefined();
  return key!;
}

describe('not a key', () => {
  it('no objects, or none of them ours', () => {
    expect(assemble(LABEL, [])).toBeUndefined();
    expect(
      assemble(LABEL, [
        aes('xks:k9;something newer'), // ours, but a layout this release does not understand
        aes('xks:v0'), // versions start at 1: not understood either
        secret(Buffer.from('not ours')),
        secret(Buffer.from(`xks:l2;t=${STARTED_MS};n=${NONCE_A};w=host-1-2;r=0`)), // a lease
        object('rsa', Buffer.from('xks:v1')),
        object(undefined, Buffer.alloc(0)),
      ]),
    ).toBeUndefined();
  });

  it('only candidates and stray markers: no key (a rotation that never committed), but uncommitted() finds the candidates', () => {
    const objects = [material(1, NONCE_A), marker(1, NONCE_B), aes(legacyCandidateId(2, STARTED_MS, NONCE_C))];
    expect(assemble(LABEL, objects)).toBeUndefined();
    expect(uncommitted(objects)).toEqual([
      { object: objects[0]!.handle, version: 1, startedMs: STARTED_MS, nonce: NONCE_A },
      { object: objects[2]!.handle, version: 2, startedMs: STARTED_MS, nonce: NONCE_C },
    ]);
  });
});

describe('layout 2: material, commit markers, records', () => {
  it('material with its marker is a version: handle, marker, date, flags and evidence', () => {
    const m = material(1, NONCE_A);
    const c = marker(1, NONCE_A, T1);
    const r = recordObject(1);
    const key = assembled([m, c, r]);
    const v1 = {
      version: 1,
      handle: m.handle,
      object: m.handle,
      marker: c.handle,
      encrypt: true,
      decrypt: true,
      createdAt: T1,
      attrs: GOOD_ATTRS,
      alternates: [],
    };
    expect(key).toEqual({
      id: LABEL,
      record: record(),
      recordObject: r.handle,
      recordRevision: 1,
      leftovers: [],
      strayMarkers: [],
      state: 'Enabled',
      origin: 'HSM',
      current: v1,
      versions: new Map([[1, v1]]),
      duplicateVersions: new Set(),
      candidates: [],
      problems: [],
    });
    expect(key.current).toBe(key.versions.get(1));
    expect(usageOf(key)).toEqual({ encrypt: true, decrypt: true });
    expect(allObjects(key)).toEqual([v1]);
  });

  it('a marker without a date gives a version of unknown date; the date is the marker\'s, in whole seconds', () => {
    const key = assembled([material(1, NONCE_A), marker(1, NONCE_A, null), material(2, NONCE_B), marker(2, NONCE_B, new Date(T2.getTime() + 999))]);
    expect(key.versions.get(1)!.createdAt).toBeUndefined();
    expect(key.versions.get(2)!.createdAt).toEqual(T2);
  });

  it('the current version is the highest committed one, gaps allowed; a higher candidate is not', () => {
    const m1 = material(1, NONCE_A);
    const m3 = material(3, NONCE_B);
    const m4 = material(4, NONCE_C); // a rotation in progress
    const key = assembled([m4, m3, m1, marker(3, NONCE_B), marker(1, NONCE_A), recordObject(1)]);
    expect([...key.versions.keys()].sort()).toEqual([1, 3]);
    expect(key.current!.version).toBe(3);
    expect(key.current!.object).toBe(m3.handle);
    expect(key.candidates).toEqual([{ object: m4.handle, version: 4, startedMs: STARTED_MS, nonce: NONCE_C }]);
    expect(uncommitted([m4, m3, m1, marker(3, NONCE_B), marker(1, NONCE_A)])).toEqual(key.candidates);
  });

  it('a marker commits only the material with its nonce and version', () => {
    const m2 = material(2, NONCE_A);
    const other = marker(2, NONCE_B); // another writer's marker: its material is gone
    const wrongVersion = marker(3, NONCE_A); // this writer's nonce, another version
    const key = assembled([material(1, NONCE_C), marker(1, NONCE_C), m2, other, wrongVersion]);
    expect(key.current!.version).toBe(1);
    expect(key.candidates).toEqual([{ object: m2.handle, version: 2, startedMs: STARTED_MS, nonce: NONCE_A }]);
    expect(key.strayMarkers).toEqual([other.handle, wrongVersion.handle]);
    expect(key.problems).toEqual([]);
  });

  it('a key with a record and no material (PendingImport) has no current version', () => {
    const r = recordObject(1, { state: 'PendingImport', origin: 'EXTERNAL', usage: ['ENCRYPT'] });
    const key = assembled([r, marker(1, NONCE_B)]);
    expect(key.current).toBeUndefined();
    expect(key.versions.size).toBe(0);
    expect(key.state).toBe('PendingImport');
    expect(key.origin).toBe('EXTERNAL');
    expect(key.strayMarkers).toHaveLength(1);
    expect(usageOf(key), 'usage from the record').toEqual({ encrypt: true, decrypt: false });
    expect(allObjects(key)).toEqual([]);
  });

  it('the highest revision is the record; lower ones are leftovers', () => {
    const r1 = recordObject(1, { state: 'Enabled' }, NONCE_A);
    const r3 = recordObject(3, { state: 'PendingDeletion', deletionDate: '2026-03-01T00:00:00.000Z' }, NONCE_B);
    const r2 = recordObject(2, { state: 'Disabled' }, NONCE_C);
    const key = assembled([material(1, NONCE_D), marker(1, NONCE_D), r1, r3, r2]);
    expect(key.recordObject).toBe(r3.handle);
    expect(key.recordRevision).toBe(3);
    expect(key.state).toBe('PendingDeletion');
    expect(key.record!.deletionDate).toBe('2026-03-01T00:00:00.000Z');
    expect(key.leftovers).toEqual([r2.handle, r1.handle]);
    expect(key.problems).toEqual([]);
  });

  it('revisions compare as numbers (10 above 9)', () => {
    const r9 = recordObject(9, { state: 'Disabled' });
    const r10 = recordObject(10, { state: 'Enabled' });
    const key = assembled([r9, r10]);
    expect(key.recordObject).toBe(r10.handle);
    expect(key.recordRevision).toBe(10);
    expect(key.leftovers).toEqual([r9.handle]);
  });

  it('two records of one revision (two writers at once): the higher CKA_ID wins, whatever the order found', () => {
    const low = recordObject(2, { state: 'Enabled' }, NONCE_A);
    const high = recordObject(2, { state: 'Disabled' }, NONCE_B);
    for (const objects of [
      [low, high],
      [high, low],
    ]) {
      const key = assembled(objects);
      expect(key.recordObject).toBe(high.handle);
      expect(key.state).toBe('Disabled');
      expect(key.leftovers).toEqual([low.handle]);
      expect(key.problems, 'not a problem: the next write removes the other').toEqual([]);
    }
  });

  it('a damaged record keeps the key out of use: Disabled, a problem, never guessed', () => {
    for (const json of ['{not json', JSON.stringify({ ...record(), state: 'Sleeping' }), JSON.stringify({ ...record(), f: 2 }), '']) {
      const r = secret(recordId(1, json, NONCE_A));
      const key = assembled([material(1, NONCE_B), marker(1, NONCE_B), r]);
      expect(key.record, json).toBeUndefined();
      expect(key.recordObject).toBe(r.handle);
      expect(key.recordRevision).toBe(1);
      expect(key.state).toBe('Disabled');
      expect(key.origin).toBe('ADOPTED');
      expect(key.problems).toEqual(['the key record cannot be read']);
      // Its versions are still read (so `describe` shows them); the state keeps them from use.
      expect(key.current!.version).toBe(1);
    }
  });

  it('a damaged record of a lower revision is only a leftover', () => {
    const bad = secret(recordId(1, '{not json', NONCE_A));
    const good = recordObject(2);
    const key = assembled([bad, good]);
    expect(key.record).toEqual(record());
    expect(key.leftovers).toEqual([bad.handle]);
    expect(key.problems).toEqual([]);
  });

  it('keeps fields of a newer record format it does not know (the record is loose), and reads allowExposed', () => {
    const r = secret(recordId(1, JSON.stringify({ ...record(), allowExposed: [1], future: 'x' }), NONCE_A));
    const key = assembled([r]);
    expect(key.record).toMatchObject({ allowExposed: [1], future: 'x' });
  });
});

describe('several objects for one version', () => {
  it('different CKA_IDs (writers that could not see each other): the lowest CKA_ID is used, the others are alternates', () => {
    const early = aes(materialId(2, STARTED_MS, NONCE_B));
    const late = aes(materialId(2, STARTED_MS + 1, NONCE_A));
    const sameTimeHigherNonce = aes(materialId(2, STARTED_MS, NONCE_C));
    const objects = [material(1, NONCE_D), marker(1, NONCE_D), late, sameTimeHigherNonce, early, marker(2, NONCE_A), marker(2, NONCE_B), marker(2, NONCE_C)];
    for (const order of [objects, [...objects].reverse()]) {
      const key = assembled(order);
      expect(key.duplicateVersions.size).toBe(0);
      const v2 = key.versions.get(2)!;
      expect(key.current).toBe(v2);
      expect(v2.object).toBe(early.handle);
      expect(v2.alternates.map((a) => a.object)).toEqual([sameTimeHigherNonce.handle, late.handle]);
      for (const a of v2.alternates) {
        expect(a.version).toBe(2);
        expect(a.alternates).toEqual([]);
        expect(a.marker).toBeDefined();
      }
      // Each version followed by its alternates (versions in the order they were found).
      const all = allObjects(key).map((v) => v.object);
      expect(all).toHaveLength(4);
      expect(all.slice(all.indexOf(early.handle), all.indexOf(early.handle) + 3)).toEqual([early.handle, sameTimeHigherNonce.handle, late.handle]);
      expect(all).toContain(key.versions.get(1)!.object);
    }
  });

  it('adopted objects with different CKA_IDs are version 1 and alternates', () => {
    const a = aes(Buffer.from([0x02]));
    const b = aes(Buffer.from([0x01]));
    const key = assembled([a, b]);
    expect(key.duplicateVersions.size).toBe(0);
    expect(key.current!.object).toBe(b.handle);
    expect(key.current!.alternates.map((x) => x.object)).toEqual([a.handle]);
  });

  it('the same CKA_ID twice (two pkcs11-tool --keygen with one label): a duplicate version', () => {
    const a = aes(Buffer.alloc(0));
    const b = aes(Buffer.alloc(0));
    const key = assembled([a, b]);
    expect(key.duplicateVersions).toEqual(new Set([1]));
    expect(key.versions.get(1)!.alternates).toHaveLength(1);
    expect(key.problems).toEqual([]);
  });

  it('a duplicate among three objects of one version, beside a clean version', () => {
    const key = assembled([aes(legacyVersionId(1, T1)), aes(legacyVersionId(2)), aes(legacyVersionId(2)), aes(legacyVersionId(2, T2))]);
    expect(key.duplicateVersions).toEqual(new Set([2]));
    expect(key.versions.get(2)!.alternates).toHaveLength(2);
    expect(key.current!.version).toBe(2);
  });
});

describe('layout 1 (earlier releases)', () => {
  it('a committed version by its own CKA_ID, with its date in seconds or none; a candidate; the record as revision 0', () => {
    const v1 = aes(legacyVersionId(1, T1, NONCE_A));
    const v2 = aes(legacyVersionId(2));
    const c3 = aes(legacyCandidateId(3, STARTED_MS, 'abc123'));
    const r = secret(legacyRecordId(encodeRecord(record({ state: 'Disabled', rotationDays: 90 }))));
    const key = assembled([v1, v2, c3, r]);
    expect(key.versions.get(1)).toMatchObject({ object: v1.handle, createdAt: T1, marker: undefined });
    expect(key.versions.get(2)).toMatchObject({ object: v2.handle, createdAt: undefined, marker: undefined });
    expect(key.current!.version).toBe(2);
    expect(key.candidates).toEqual([{ object: c3.handle, version: 3, startedMs: STARTED_MS, nonce: 'abc123' }]);
    expect(key.recordObject).toBe(r.handle);
    expect(key.recordRevision).toBe(0);
    expect(key.state).toBe('Disabled');
    expect(key.record!.rotationDays).toBe(90);
    expect(key.problems).toEqual([]);
  });

  it('layout 1 and layout 2 together: versions from both, the layout 2 record supersedes the layout 1 one', () => {
    const old = secret(legacyRecordId(encodeRecord(record({ state: 'Disabled' }))));
    const r1 = recordObject(1, { state: 'Enabled' });
    const key = assembled([aes(legacyVersionId(1, T1)), material(2, NONCE_B), marker(2, NONCE_B, T2), old, r1]);
    expect([...key.versions.keys()].sort()).toEqual([1, 2]);
    expect(key.current!.marker).toBeDefined();
    expect(key.recordObject).toBe(r1.handle);
    expect(key.state).toBe('Enabled');
    expect(key.leftovers).toEqual([old.handle]);
    expect(key.problems).toEqual([]);
  });

  it('two layout 1 records (two processes adopting at once) are a problem, unless a later revision exists', () => {
    const a = secret(legacyRecordId(encodeRecord(record({ state: 'Enabled' }))));
    const b = secret(legacyRecordId(encodeRecord(record({ state: 'Disabled' }))));
    const key = assembled([aes(legacyVersionId(1)), a, b]);
    expect(key.problems).toEqual(['2 key records carry this label']);
    expect(key.recordRevision).toBe(0);
    // One of them is taken in every process alike (the higher CKA_ID), the other is a leftover.
    const [higher, lower] = Buffer.compare(a.id, b.id) > 0 ? [a, b] : [b, a];
    expect(key.recordObject).toBe(higher.handle);
    expect(key.leftovers).toEqual([lower.handle]);
    const resolved = assembled([aes(legacyVersionId(1)), a, b, recordObject(1)]);
    expect(resolved.problems).toEqual([]);
    expect(resolved.leftovers).toHaveLength(2);
  });
});

describe('adopted keys (no record)', () => {
  it('an AES key without a CKA_ID, or with one not ours, is version 1, Enabled, ADOPTED, revision 0', () => {
    for (const id of [Buffer.alloc(0), Buffer.from('01', 'hex'), Buffer.from('my key'), Buffer.from('XKS:v2')]) {
      const o = aes(id);
      const key = assembled([o]);
      expect(key.record).toBeUndefined();
      expect(key.recordObject).toBeUndefined();
      expect(key.recordRevision).toBe(0);
      expect(key.leftovers).toEqual([]);
      expect(key.state).toBe('Enabled');
      expect(key.origin).toBe('ADOPTED');
      expect(key.current).toMatchObject({ version: 1, object: o.handle, handle: o.handle, marker: undefined, createdAt: undefined });
      expect(key.problems).toEqual([]);
    }
  });

  it('takes its usage from the current version\'s flags (an absent flag is no usage)', () => {
    expect(usageOf(assembled([aes('', { attrs: { encrypt: true, decrypt: false } })]))).toEqual({ encrypt: true, decrypt: false });
    expect(usageOf(assembled([aes('', { attrs: { decrypt: true } })]))).toEqual({ encrypt: false, decrypt: true });
    expect(usageOf(assembled([aes('', { attrs: {} })]))).toEqual({ encrypt: false, decrypt: false });
    const key = assembled([aes('', { attrs: { encrypt: false, decrypt: true, sensitive: false } })]);
    expect(key.current).toMatchObject({ encrypt: false, decrypt: true, attrs: { encrypt: false, decrypt: true, sensitive: false } });
  });

  it('once it has a record, the record\'s usage counts, not the flags', () => {
    const key = assembled([aes('', { attrs: { encrypt: true, decrypt: true } }), recordObject(1, { origin: 'ADOPTED', usage: ['DECRYPT'] })]);
    expect(key.origin).toBe('ADOPTED');
    expect(usageOf(key)).toEqual({ encrypt: false, decrypt: true });
  });

  it('an adopted version 1 and layout 2 versions above it', () => {
    const bare = aes(Buffer.alloc(0));
    const key = assembled([bare, material(2, NONCE_A), marker(2, NONCE_A), recordObject(1, { origin: 'ADOPTED' })]);
    expect(key.versions.get(1)!.object).toBe(bare.handle);
    expect(key.current!.version).toBe(2);
  });
});

describe('AES objects of another size', () => {
  it('are never served, and said so: alone they still make a key, with a problem and no version', () => {
    const key = assembled([aes(Buffer.alloc(0), { valueLen: 16 })]);
    expect(key.versions.size).toBe(0);
    expect(key.current).toBeUndefined();
    expect(key.problems).toEqual(['an AES-128 key carries this label: only AES-256 keys are served']);
    expect(key.origin).toBe('ADOPTED');
    expect(key.state).toBe('Enabled');
  });

  it('beside good versions: the problem is reported, the good versions are read, the odd one is neither version nor candidate', () => {
    const key = assembled([material(1, NONCE_A), marker(1, NONCE_A), aes(materialId(2, STARTED_MS, NONCE_B), { valueLen: 24 }), marker(2, NONCE_B), recordObject(1)]);
    expect(key.problems).toEqual(['an AES-192 key carries this label: only AES-256 keys are served']);
    expect([...key.versions.keys()]).toEqual([1]);
    expect(key.candidates).toEqual([]);
    expect(key.strayMarkers).toHaveLength(1);
  });

  it('a length the token does not report (undefined or 0) is taken as AES-256', () => {
    expect(assembled([aes(Buffer.alloc(0), { valueLen: undefined })]).current?.version).toBe(1);
    expect(assembled([aes(Buffer.alloc(0), { valueLen: 0 })]).current?.version).toBe(1);
  });
});

describe('allObjects and usageOf without a key', () => {
  it('allObjects(undefined) is empty', () => {
    expect(allObjects(undefined)).toEqual([]);
  });

  it('a key with neither record nor current version may do nothing', () => {
    const key = assembled([aes(Buffer.alloc(0), { valueLen: 16 })]);
    expect(usageOf(key)).toEqual({ encrypt: false, decrypt: false });
  });
});
