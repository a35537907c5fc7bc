// `xks config check`: the configuration file without starting anything. One line per finding (FAIL lines are the
// problems: exit 1 on any), never a secret's value. `--hsm` also logs in and reads every allow-listed key.
import { Command } from 'commander';
import { checkConfigFile, type ConfigFinding } from '../config/config-check.js';
import { configPath, loadFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { usageOf, type ExternalKey } from '../keys/catalogue.js';
import { refusedExposure } from '../keys/exposure.js';
import { KeyError } from '../keys/errors.js';
import { materialExpired } from '../keys/imported-material.js';
import { openCatalogue, openHsm, openLifecycle } from '../proxy.js';
import { withConfigOption } from './context.js';

const MARK = { ok: 'ok  ', note: 'note', warn: 'WARN', fail: 'FAIL' } as const;

export function configCommand(): Command {
  const config = new Command('config').description('check a configuration file');
  config.addCommand(
    withConfigOption(new Command('check'))
      .description(
        'validate the file (and its overrides), every secret it refers to (set, readable, not open to others), the TLS certificate and key ' +
          '(match, dates, chain), the mTLS CA and the ports; one line per finding, exit 1 on any FAIL. `xks serve` runs the same checks at start-up',
      )
      .option('--hsm', 'also log in to the token and check that every allow-listed key exists and can be served')
      .option('--json', 'print the findings as JSON')
      .action(async (opts: { hsm?: boolean; json?: boolean }, cmd: Command) => {
        const file = configPath(cmd.optsWithGlobals<{ config?: string }>().config);
        const { findings, config } = await checkConfigFile(file, { probePorts: true });
        const pinOk = !findings.some((f) => f.where === 'hsm.pin' && f.status === 'fail');
        if (opts.hsm && config && pinOk) findings.push(...(await hsmFindings(file, config)));
        else if (opts.hsm) findings.push({ status: 'fail', where: 'hsm', message: 'not checked: the configuration or the PIN above is not usable' });
        const problems = findings.filter((f) => f.status === 'fail').length;
        const warnings = findings.filter((f) => f.status === 'warn').length;
        if (opts.json) console.log(JSON.stringify({ file, problems, warnings, findings }));
        else {
          for (const f of findings) console.log(`${MARK[f.status]}  ${f.where}: ${f.message}`);
          console.log(`${problems} problem(s), ${warnings} warning(s) in ${file}`);
        }
        if (problems > 0) process.exitCode = 1;
      }),
  );
  return config;
}

/** Log in, then read every key an allow-list names: it must exist and be what GetKeyMetadata would call ENABLED. */
async function hsmFindings(file: string, config: Config): Promise<ConfigFinding[]> {
  const out: ConfigFinding[] = [];
  let hsm;
  let loaded;
  try {
    loaded = loadFile(file);
    hsm = await openHsm(loaded);
  } catch (e) {
    return [{ status: 'fail', where: 'hsm', message: (e as Error).message }];
  }
  try {
    out.push({ status: 'ok', where: 'hsm', message: `logged in to token ${hsm.info.label} (serial ${hsm.info.serial}, profile ${config.hsm.profile})` });
    const lifecycle = openLifecycle(hsm, openCatalogue(hsm, loaded), loaded);
    for (const [i, p] of config.prefixes.entries()) {
      const where = `prefixes.${i}.keys`;
      if (!p.keys) {
        out.push({ status: 'note', where, message: `no allow-list: key store ${p.path || '(no prefix)'} serves every AES-256 key in the token` });
        continue;
      }
      for (const id of p.keys) {
        let key: ExternalKey;
        try {
          key = await lifecycle.get(id);
        } catch (e) {
          if (e instanceof KeyError && e.code === 'NotFoundException') out.push({ status: 'fail', where, message: `${id}: no such key in the token` });
          else out.push({ status: 'fail', where, message: `${id}: ${(e as Error).message}` });
          continue;
        }
        out.push(keyFinding(where, key));
      }
    }
  } finally {
    hsm.close();
  }
  return out;
}

/** A key KMS can use: enabled with material it can serve (what GetKeyMetadata calls ENABLED), encrypt and decrypt. */
function keyFinding(where: string, key: ExternalKey): ConfigFinding {
  const id = key.id;
  if (key.problems.length > 0) return { status: 'fail', where, message: `${id}: cannot be used: ${key.problems.join('; ')}` };
  if (key.state === 'PendingDeletion') return { status: 'fail', where, message: `${id}: pending deletion (xks keys cancel-deletion ${id})` };
  if (!key.current) return { status: 'fail', where, message: `${id}: has no key material (${key.state})` };
  if (key.duplicateVersions.has(key.current.version)) return { status: 'fail', where, message: `${id}: more than one token object claims version ${key.current.version}` };
  if (materialExpired(key.record, Date.now())) return { status: 'fail', where, message: `${id}: its imported key material has expired` };
  const exposed = refusedExposure(key, key.current);
  if (exposed) return { status: 'fail', where, message: `${id}: ${exposed}` };
  if (key.state !== 'Enabled') return { status: 'warn', where, message: `${id}: ${key.state} (KMS sees it DISABLED; xks keys enable ${id})` };
  const usage = usageOf(key);
  if (!usage.encrypt || !usage.decrypt) {
    return { status: 'warn', where, message: `${id}: usage ${[usage.encrypt && 'ENCRYPT', usage.decrypt && 'DECRYPT'].filter(Boolean).join(',') || 'NONE'}: KMS creates keys only over ENCRYPT and DECRYPT` };
  }
  return { status: 'ok', where, message: `${id}: Enabled, AES_256, ENCRYPT,DECRYPT, version ${key.current.version}` };
}
