// `xks import`: bring your own key material, with AWS KMS's steps, names and files (docs/byok.md): get-parameters
// writes WrappingPublicKey.bin and ImportToken.bin, the customer wraps their material with openssl, key-material
// imports it; delete-key-material and sweep (for cron) complete the set.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import type { ImportService } from '../import/import-service.js';
import { ImportTypeSchema, WrappingAlgorithmSchema, WrappingKeySpecSchema, type ImportType, type WrappingAlgorithm, type WrappingKeySpec } from '../import/schemas.js';
import { KeyError } from '../keys/errors.js';
import { ExpirationModelSchema, type ExpirationModel } from '../keys/imported-material.js';
import { createLogger } from '../obs/logger.js';
import { openCatalogue, openImports, openLifecycle } from '../proxy.js';
import { withConfigOption, withHsm } from './context.js';

const IN_PROCESS_HELP =
  "allow RSAES_OAEP_SHA_256 on an HSM whose OAEP lacks SHA-256 (SoftHSM): the key material is then decoded in this process's memory (logged)";

/** Open the token and run one call of the import service; errors carry their KMS name. */
function run<T>(cmd: Command, allowInProcess: boolean, fn: (svc: ImportService) => Promise<T>): Promise<T> {
  return withHsm(cmd, async (hsm, loaded) => {
    const catalogue = openCatalogue(hsm, loaded);
    // The opt-in: this command's flag, or import.allowInProcessMaterial in the config.
    const svc = openImports(hsm, catalogue, openLifecycle(hsm, catalogue, loaded), loaded, createLogger('warn', process.stderr), allowInProcess);
    try {
      return await fn(svc);
    } catch (e) {
      // The KMS name first, as a person reads it; `code` kept for the audit line.
      if (e instanceof KeyError) throw new KeyError(e.code, `${e.code}: ${e.message}`);
      throw e;
    }
  });
}

function readBlob(file: string, what: string): Buffer {
  let b: Buffer;
  try {
    b = readFileSync(file);
  } catch {
    throw new Error(`cannot read ${what} from ${file}`);
  }
  if (b.length === 0) throw new Error(`${file} is empty; it should hold the ${what}`);
  return b;
}

function parseDate(value: string): Date {
  const d = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(d.getTime())) throw new Error(`--valid-to takes an ISO 8601 date such as 2027-01-31T00:00:00Z, not "${value}"`);
  return d;
}

export function importCommand(): Command {
  const imp = new Command('import').description('import your own key material into an EXTERNAL key (AWS KMS import steps; see docs/byok.md)');

  imp.addCommand(
    withConfigOption(new Command('get-parameters'))
      .description('make a wrapping key pair in the HSM (valid 24 hours) and write WrappingPublicKey.bin and ImportToken.bin')
      .requiredOption('--key-id <externalKeyId>', 'a key created with --origin EXTERNAL')
      .addOption(new Option('--wrapping-algorithm <algorithm>', 'how you will wrap the material').choices(WrappingAlgorithmSchema.options).makeOptionMandatory())
      .addOption(new Option('--wrapping-key-spec <spec>', 'the RSA wrapping key size').choices(WrappingKeySpecSchema.options).makeOptionMandatory())
      .requiredOption('--out-dir <dir>', 'where to write WrappingPublicKey.bin (DER SubjectPublicKeyInfo) and ImportToken.bin')
      .option('--allow-in-process-unwrap', IN_PROCESS_HELP)
      .option('--json', 'print JSON')
      .action(
        (
          opts: { keyId: string; wrappingAlgorithm: WrappingAlgorithm; wrappingKeySpec: WrappingKeySpec; outDir: string; allowInProcessUnwrap?: boolean; json?: boolean },
          cmd: Command,
        ) =>
          run(cmd, opts.allowInProcessUnwrap === true, async (svc) => {
            const p = await svc.getParametersForImport({ KeyId: opts.keyId, WrappingAlgorithm: opts.wrappingAlgorithm, WrappingKeySpec: opts.wrappingKeySpec });
            mkdirSync(opts.outDir, { recursive: true });
            const publicKeyFile = join(opts.outDir, 'WrappingPublicKey.bin');
            const tokenFile = join(opts.outDir, 'ImportToken.bin');
            writeFileSync(publicKeyFile, p.PublicKey);
            // The import token is a bearer credential for one import: readable by its owner only, also when the file
            // was there before (a mode given to writeFileSync applies only to a file it creates).
            writeFileSync(tokenFile, p.ImportToken, { mode: 0o600 });
            chmodSync(tokenFile, 0o600);
            const validTo = p.ParametersValidTo.toISOString();
            if (opts.json) {
              console.log(JSON.stringify({ KeyId: p.KeyId, WrappingPublicKeyFile: publicKeyFile, ImportTokenFile: tokenFile, ParametersValidTo: validTo }));
            } else {
              console.log(`WrappingPublicKey  ${publicKeyFile}  (${opts.wrappingKeySpec}, DER SubjectPublicKeyInfo)`);
              console.log(`ImportToken        ${tokenFile}`);
              console.log(`ParametersValidTo  ${validTo}`);
            }
          }),
      ),
  );

  imp.addCommand(
    withConfigOption(new Command('key-material'))
      .description('import wrapped key material: it is unwrapped inside the HSM into a sensitive, non-extractable key')
      .requiredOption('--key-id <externalKeyId>', 'the key the import token was made for')
      .requiredOption('--import-token <file>', 'ImportToken.bin from get-parameters')
      .requiredOption('--encrypted-key-material <file>', 'EncryptedKeyMaterial.bin: your 32 bytes wrapped with the wrapping public key')
      .addOption(new Option('--expiration-model <model>', 'KEY_MATERIAL_EXPIRES (then --valid-to) or KEY_MATERIAL_DOES_NOT_EXPIRE').choices(ExpirationModelSchema.options))
      .option('--valid-to <date>', 'ISO 8601 date when the material expires and is destroyed (at most 365 days away)', parseDate)
      .addOption(
        new Option('--import-type <type>', 'NEW_KEY_MATERIAL: a new version; EXISTING_KEY_MATERIAL: the same material again (default once material was imported)').choices(
          ImportTypeSchema.options,
        ),
      )
      .option('--allow-in-process-unwrap', IN_PROCESS_HELP)
      .option('--json', 'print JSON')
      .action(
        (
          opts: {
            keyId: string;
            importToken: string;
            encryptedKeyMaterial: string;
            expirationModel?: ExpirationModel;
            validTo?: Date;
            importType?: ImportType;
            allowInProcessUnwrap?: boolean;
            json?: boolean;
          },
          cmd: Command,
        ) => {
          const token = readBlob(opts.importToken, 'import token');
          const blob = readBlob(opts.encryptedKeyMaterial, 'encrypted key material');
          // Like KMS's CLI: --valid-to alone means the material expires.
          const model = opts.expirationModel ?? (opts.validTo ? 'KEY_MATERIAL_EXPIRES' : undefined);
          return run(cmd, opts.allowInProcessUnwrap === true, async (svc) => {
            const r = await svc.importKeyMaterial({
              KeyId: opts.keyId,
              ImportToken: token,
              EncryptedKeyMaterial: blob,
              ExpirationModel: model,
              ValidTo: opts.validTo,
              ImportType: opts.importType,
            });
            if (opts.json) console.log(JSON.stringify(r));
            else {
              const until = r.ValidTo ? `valid to ${r.ValidTo}` : 'does not expire';
              console.log(`imported into ${r.KeyId}: version ${r.KeyMaterialVersion} (${r.ImportType}), ${until}; key ${r.KeyState}`);
            }
          });
        },
      ),
  );

  imp.addCommand(
    withConfigOption(new Command('delete-key-material'))
      .description('destroy the imported material; the key waits in PendingImport until the same material is imported again')
      .requiredOption('--key-id <externalKeyId>')
      .option('--json', 'print JSON')
      .action((opts: { keyId: string; json?: boolean }, cmd: Command) =>
        run(cmd, false, async (svc) => {
          const r = await svc.deleteImportedKeyMaterial(opts.keyId);
          if (opts.json) console.log(JSON.stringify(r));
          else console.log(`deleted the key material of ${r.KeyId} (versions ${r.DeletedVersions.join(', ') || 'none present'}); key ${r.KeyState}`);
        }),
      ),
  );

  imp.addCommand(
    withConfigOption(new Command('sweep'))
      .description('destroy wrapping keys past their 24 hours and key material past its ValidTo (safe to run from cron)')
      .option('--json', 'print JSON')
      .action((opts: { json?: boolean }, cmd: Command) =>
        run(cmd, false, async (svc) => {
          const r = await svc.sweep();
          if (opts.json) {
            console.log(JSON.stringify(r));
            return;
          }
          console.log(`wrapping key objects destroyed: ${r.WrappingKeysDestroyed}`);
          for (const m of r.MaterialDestroyed) console.log(`destroyed key material of ${m.KeyId} version ${m.Version} (${m.Reason})`);
        }),
      ),
  );
  return imp;
}
