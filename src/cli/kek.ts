// `xks kek`: key-encryption keys for backups, and moving one between two HSMs without it ever being in clear
// (docs/backup.md). Ceremonies need the security officer: SO PIN from XKS_HSM_SO_PIN, user PIN from the config.
import { existsSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import type { LoadedFile } from '../config/load.js';
import { ckrMeanings } from '../hsm/errors.js';
import { loadProfile, resolveLibrary } from '../hsm/profile.js';
import { createKek, createTransportKey, listKeks, receiveKek, sendKek, type CeremonyAccess } from '../keys/kek.js';
import { loadFor, readInput, withConfigOption, withHsm } from './context.js';

/** The token and both PINs for a ceremony; run without an HsmConnection open in this process. */
export function ceremonyAccess(loaded: LoadedFile): CeremonyAccess {
  const soPin = process.env.XKS_HSM_SO_PIN;
  if (!soPin) throw new Error('set XKS_HSM_SO_PIN to the security officer PIN: this step needs the security officer');
  const h = loaded.config.hsm;
  const profile = loadProfile(h.profile);
  return {
    ...resolveLibrary(profile, h),
    meanings: ckrMeanings(profile),
    tokenLabel: h.tokenLabel,
    tokenSerial: h.tokenSerial,
    userPin: loaded.pin,
    soPin,
  };
}

/** Refuse before any work is done when an output file exists (a ceremony's output is never silently replaced). */
export function refuseExisting(path: string): void {
  if (existsSync(path)) throw new Error(`${path} already exists: choose another file or remove it`);
}

/** Write a file that must not already exist. */
export function writeNew(path: string, data: string | Buffer): void {
  try {
    writeFileSync(path, data, { flag: 'wx', mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${path} already exists: choose another file or remove it`);
    throw e;
  }
}


export function kekCommand(): Command {
  const kek = new Command('kek').description('key-encryption keys (KEKs) for `xks keys export`, and moving one between HSMs');

  kek.addCommand(
    withConfigOption(new Command('create'))
      .description('make a KEK: AES-256, marked trusted by the security officer, private to the user (needs XKS_HSM_SO_PIN)')
      .argument('<label>', 'the KEK\'s label, 1 to 64 printable ASCII characters')
      .option('--json', 'print JSON')
      .action(async (label: string, opts: { json?: boolean }, cmd: Command) => {
        const r = await createKek(ceremonyAccess(loadFor(cmd)), label);
        console.log(opts.json ? JSON.stringify(r) : `created KEK ${r.label}: trusted, private; check value ${r.checkValue}`);
      }),
  );

  kek.addCommand(
    withConfigOption(new Command('list'))
      .description('list the KEKs (with their check values) and the transport keys waiting for `xks kek receive`')
      .option('--json', 'print JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        await withHsm(cmd, async (hsm) => {
          const l = await listKeks(hsm);
          if (opts.json) {
            console.log(JSON.stringify(l));
            return;
          }
          if (l.keks.length === 0) console.log('no KEK in this token');
          for (const k of l.keks) {
            const notes = [k.trusted ? 'trusted' : 'NOT trusted', k.private ? 'private' : 'PUBLIC (never sealed)'];
            console.log(`KEK ${k.label}: ${notes.join(', ')}; check value ${k.checkValue ?? '-'}`);
          }
          for (const t of l.transportKeys) console.log(`transport key ${t.label}: waiting for \`xks kek receive\`; fingerprint ${t.fingerprint}`);
        });
      }),
  );

  kek.addCommand(
    withConfigOption(new Command('transport-key'))
      .description('receiving HSM: make an RSA key pair to receive KEK <label>, write its public key (needs XKS_HSM_SO_PIN)')
      .argument('<label>', 'the label the received KEK will have here')
      .requiredOption('--out <file>', 'where to write the public key (SubjectPublicKeyInfo DER)')
      .option('--replace', 'replace a transport key made earlier for this label')
      .option('--json', 'print JSON')
      .action(async (label: string, opts: { out: string; replace?: boolean; json?: boolean }, cmd: Command) => {
        const access = ceremonyAccess(loadFor(cmd));
        refuseExisting(opts.out);
        const r = await createTransportKey(access, label, { replace: opts.replace === true });
        writeNew(opts.out, r.publicKeyDer);
        if (opts.json) console.log(JSON.stringify({ label, publicKey: opts.out, fingerprint: r.fingerprint }));
        else console.log(`wrote the transport public key for ${label} to ${opts.out}; fingerprint ${r.fingerprint}`);
      }),
  );

  kek.addCommand(
    withConfigOption(new Command('send'))
      .description('sending HSM: wrap KEK <label> under the receiving HSM\'s transport public key (needs XKS_HSM_SO_PIN)')
      .argument('<label>', 'the KEK to send')
      .requiredOption('--public-key <file>', 'the receiving HSM\'s transport public key (from `xks kek transport-key`)')
      .requiredOption('--fingerprint <hex>', 'the fingerprint `xks kek transport-key` printed on the receiving side, read out of band')
      .requiredOption('--out <file>', 'where to write the wrapped KEK')
      .option('--json', 'print JSON')
      .action(async (label: string, opts: { publicKey: string; fingerprint: string; out: string; json?: boolean }, cmd: Command) => {
        const access = ceremonyAccess(loadFor(cmd));
        refuseExisting(opts.out);
        const der = readInput(opts.publicKey, 'the public key');
        const r = await sendKek(access, label, der, opts.fingerprint);
        writeNew(opts.out, `${JSON.stringify(r.transfer, null, 2)}\n`);
        if (opts.json) console.log(JSON.stringify({ label, out: opts.out, checkValue: r.checkValue }));
        else console.log(`wrote KEK ${label}, wrapped for the receiving HSM, to ${opts.out}; check value ${r.checkValue}`);
      }),
  );

  kek.addCommand(
    withConfigOption(new Command('receive'))
      .description('receiving HSM: unwrap a KEK sent by `xks kek send` as a trusted KEK <label> (needs XKS_HSM_SO_PIN)')
      .argument('<label>', 'the label given to `xks kek transport-key` here')
      .requiredOption('--in <file>', 'the wrapped KEK (from `xks kek send`)')
      .requiredOption('--check-value <hex>', 'the check value `xks kek send` printed on the sending side, read out of band')
      .option('--json', 'print JSON')
      .action(async (label: string, opts: { in: string; checkValue: string; json?: boolean }, cmd: Command) => {
        const access = ceremonyAccess(loadFor(cmd));
        const contents = readInput(opts.in, 'the wrapped KEK').toString('utf8');
        const r = await receiveKek(access, label, contents, opts.checkValue);
        console.log(opts.json ? JSON.stringify(r) : `received KEK ${r.label}: trusted, private; check value ${r.checkValue}`);
      }),
  );
  return kek;
}
