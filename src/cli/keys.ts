// `xks keys`: create, list and describe external keys in the token.
import { Command, Option } from 'commander';
import type { ExternalKey } from '../keys/catalogue.js';
import { EXTERNAL_KEY_ID } from '../keys/key-objects.js';
import { openCatalogue } from '../proxy.js';
import { withConfigOption, withHsm } from './context.js';

function parseUsage(value: string): { encrypt: boolean; decrypt: boolean } {
  const parts = value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  const bad = parts.filter((p) => p !== 'encrypt' && p !== 'decrypt' && p !== 'none');
  if (bad.length) throw new Error(`--usage takes encrypt, decrypt, both (encrypt,decrypt) or none; not "${bad.join(',')}"`);
  return { encrypt: parts.includes('encrypt'), decrypt: parts.includes('decrypt') };
}

function usageOf(k: ExternalKey): string {
  const u = [k.current.encrypt && 'ENCRYPT', k.current.decrypt && 'DECRYPT'].filter(Boolean);
  return u.length ? u.join(',') : 'NONE';
}

function describe(k: ExternalKey) {
  return {
    KeyId: k.id,
    KeySpec: 'AES_256',
    KeyUsage: usageOf(k),
    KeyState: 'Enabled',
    CurrentVersion: k.current.version,
    // More than one token object for one version: the proxy refuses that version until the extra objects are removed.
    ...(k.duplicateVersions.size > 0 ? { DuplicateVersions: [...k.duplicateVersions] } : {}),
    Versions: [...k.versions.values()].map((v) => ({
      Version: v.version,
      Encrypt: v.encrypt,
      Decrypt: v.decrypt,
      // CKA_LOCAL and CKA_NEVER_EXTRACTABLE true: generated in the HSM and never readable outside it.
      Local: v.attrs.local,
      NeverExtractable: v.attrs.neverExtractable,
      Sensitive: v.attrs.sensitive,
      Extractable: v.attrs.extractable,
    })),
  };
}

export function keysCommand(): Command {
  const keys = new Command('keys').description('manage external keys in the token');

  keys.addCommand(
    withConfigOption(new Command('create'))
      .description('generate an AES-256 key in the HSM (sensitive, non-extractable)')
      .argument('<externalKeyId>', 'the id KMS will use: 1 to 128 characters of A-Za-z0-9._-')
      .addOption(new Option('--usage <list>', 'encrypt, decrypt, or both').default('encrypt,decrypt'))
      .option('--if-missing', 'succeed without change when the key already exists (for set-up scripts)')
      .option('--json', 'print JSON')
      .action(async (id: string, opts: { usage: string; json?: boolean; ifMissing?: boolean }, cmd: Command) => {
        if (!EXTERNAL_KEY_ID.test(id)) throw new Error(`"${id}" is not a valid external key id: use 1 to 128 characters of A-Za-z0-9._-`);
        const usage = parseUsage(opts.usage);
        await withHsm(cmd, async (hsm, loaded) => {
          if (id === loaded.config.hsm.healthKeyLabel) throw new Error(`"${id}" is reserved for the health check`);
          const catalogue = openCatalogue(hsm, loaded);
          const existing = opts.ifMissing ? await catalogue.refresh(id) : undefined;
          if (existing) {
            console.log(`${id} exists: AES_256, ${usageOf(existing)}, version ${existing.current.version}`);
            return;
          }
          const key = await catalogue.create(id, usage);
          if (opts.json) console.log(JSON.stringify(describe(key)));
          else console.log(`created ${id}: AES_256, ${usageOf(key)}, version ${key.current.version}`);
        });
      }),
  );

  keys.addCommand(
    withConfigOption(new Command('list'))
      .description('list the AES keys in the token')
      .option('--json', 'print JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        await withHsm(cmd, async (hsm, loaded) => {
          const all = await openCatalogue(hsm, loaded).list();
          if (opts.json) {
            console.log(JSON.stringify(all.map(describe)));
            return;
          }
          const rows = all.map((k) => [k.id, usageOf(k), String(k.current.version), k.id === loaded.config.hsm.healthKeyLabel ? 'health check' : '']);
          const width = Math.max(5, ...rows.map((r) => r[0]!.length));
          console.log(`${'KeyId'.padEnd(width)}  ${'Usage'.padEnd(15)}  Version  Note`);
          for (const r of rows) console.log(`${r[0]!.padEnd(width)}  ${r[1]!.padEnd(15)}  ${r[2]!.padEnd(7)}  ${r[3]}`.trimEnd());
        });
      }),
  );

  keys.addCommand(
    withConfigOption(new Command('describe'))
      .description('show a key, its versions and the evidence that it never left the HSM')
      .argument('<externalKeyId>')
      .action(async (id: string, _opts, cmd: Command) => {
        await withHsm(cmd, async (hsm, loaded) => {
          const key = await openCatalogue(hsm, loaded).refresh(id);
          if (!key) throw new Error(`no key "${id}" in token ${hsm.info.label}`);
          console.log(JSON.stringify(describe(key), null, 2));
        });
      }),
  );
  return keys;
}
