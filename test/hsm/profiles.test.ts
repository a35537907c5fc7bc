// Every HSM profile shipped in hsm/ loads and validates (a profile that does not parse stops `serve` for every
// operator who names it), and an error in a profile names the profile's file, not the operator's config.
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadProfile, parseProfile, PROFILE_DIR, resolveLibrary } from '../../src/hsm/profile.js';

const shipped = readdirSync(PROFILE_DIR).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -'.yaml'.length));

describe('shipped HSM profiles', () => {
  it('include the vendors the README names and the second CI token', () => {
    expect(shipped).toEqual(expect.arrayContaining(['softhsm2', 'nss', 'luna', 'cloudhsm', 'nshield']));
  });

  it.each(shipped)('%s loads, names itself, and gives its facts', (name) => {
    const p = loadProfile(name);
    expect(p.name).toBe(name);
    expect(p.modulePaths.length).toBeGreaterThan(0);
    for (const code of [...p.errors.badTag, ...p.errors.busy]) expect(code).toMatch(/^CKR_/);
  });

  it('the network HSMs run calls on the thread pool and let the HSM make the IV', () => {
    for (const name of ['luna', 'cloudhsm', 'nshield']) {
      const p = loadProfile(name);
      expect(p.callMode).toBe('async');
      expect(p.ivMode).not.toBe('caller-random');
    }
  });

  it('record the vendor facts the proxy acts on', () => {
    expect(loadProfile('nshield').errors.badTag).toContain('CKR_FUNCTION_FAILED');
    expect(loadProfile('cloudhsm').errors.busy).toContain('CKR_DEVICE_ERROR');
    expect(loadProfile('softhsm2').errors.badTag).toContain('CKR_GENERAL_ERROR');
    expect(loadProfile('nss').attributes).toEqual({ allowedMechanisms: false, localIsEvidence: false, wrapWithTrusted: false });
    expect(loadProfile('cloudhsm').errors.busy).toContain('CKR_FUNCTION_FAILED');
    expect(loadProfile('softhsm2').attributes.localIsEvidence).toBe(true);
  });
});

describe('profile errors', () => {
  it('a YAML error names the profile file', () => {
    expect(() => parseProfile('notes:\n  - a: b: c\n', '/x/hsm/broken.yaml')).toThrow(/HSM profile \/x\/hsm\/broken\.yaml is not valid YAML/);
  });

  it('a schema error names the file and the field', () => {
    expect(() => parseProfile('name: x\nvendor: y\nmodulePaths: [/a]\nivMode: sideways\ncallMode: sync\n', '/x/hsm/x.yaml')).toThrow(
      /HSM profile \/x\/hsm\/x\.yaml: ivMode:/,
    );
  });

  it('error codes are CKR_ names, a vendor\'s own written CKR_VENDOR_DEFINED+0x<hex>', () => {
    const head = 'name: x\nvendor: y\nmodulePaths: [/a]\nivMode: caller-random\ncallMode: sync\n';
    const p = parseProfile(`${head}errors:\n  badTag: [CKR_AEAD_DECRYPT_FAILED, CKR_VENDOR_DEFINED+0x121]\n  busy: [CKR_VENDOR_DEFINED]\n`, 'x.yaml');
    expect(p.errors.badTag).toEqual(['CKR_AEAD_DECRYPT_FAILED', 'CKR_VENDOR_DEFINED+0x121']);
    for (const bad of ['ckr_device_error', 'CKR_VENDOR_DEFINED+121', 'CKR_VENDOR_DEFINED+0x12G', 'CKR_DEVICE_ERROR+0x1', '0x30']) {
      expect(() => parseProfile(`${head}errors:\n  busy: ["${bad}"]\n`, '/x/hsm/x.yaml'), bad).toThrow(/errors\.busy/);
    }
  });

  it('an unknown profile says where it looked', () => {
    expect(() => loadProfile('no-such-hsm')).toThrow(/no HSM profile "no-such-hsm": expected .*hsm\/no-such-hsm\.yaml/);
  });
});

describe('library parameters', () => {
  const profile = parseProfile('name: x\nvendor: y\nmodulePaths: [/bin/sh]\nivMode: caller-random\ncallMode: sync\nlibraryParameters: "vendor=a"\n', 'x.yaml');

  it('come from the profile unless the config overrides them', () => {
    expect(resolveLibrary(profile, {})).toEqual({ modulePath: '/bin/sh', libraryParameters: 'vendor=a' });
    expect(resolveLibrary(profile, { libraryParameters: "configdir='sql:/db'" }).libraryParameters).toBe("configdir='sql:/db'");
  });

  it('are absent when neither gives any', () => {
    expect(resolveLibrary(loadProfile('softhsm2'), { module: '/m.so' })).toEqual({ modulePath: '/m.so' });
  });
});
