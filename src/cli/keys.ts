// `xks keys`: the life of external keys in the token. Each command is one call on KeyLifecycle; output is a line
// for people or, with --json, the key as the admin API describes it.
import { Command, Option } from 'commander';
import type { ExternalKey } from '../keys/catalogue.js';
import { describeKey, type KeyDescription } from '../keys/key-description.js';
import { PENDING_WINDOW_DAYS } from '../keys/key-record.js';
import type { KeyLifecycle } from '../keys/lifecycle.js';
import { openCatalogue, openLifecycle } from '../proxy.js';
import { exportCommand, importWrappedCommand } from './backup.js';
import { noteAuditVersion } from './cli-audit.js';
import { withConfigOption, withHsm } from './context.js';

function parseUsage(value: string): { encrypt: boolean; decrypt: boolean } {
  const parts = value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  const bad = parts.filter((p) => p !== 'encrypt' && p !== 'decrypt' && p !== 'none');
  if (bad.length) throw new Error(`--usage takes encrypt, decrypt, both (encrypt,decrypt) or none; not "${bad.join(',')}"`);
  return { encrypt: parts.includes('encrypt'), decrypt: parts.includes('decrypt') };
}

function parseDays(name: string) {
  return (value: string): number => {
    if (!/^[0-9]{1,5}$/.test(value)) throw new Error(`${name} takes a whole number of days, not "${value}"`);
    return Number(value);
  };
}

/** A date as operators read it in a line: the day and the time to the minute, UTC. */
function when(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** The rotation setting of a key: its period and next due date, or off. */
function rotationText(d: KeyDescription): string {
  if (d.RotationPeriodInDays === undefined) return 'automatic rotation off';
  return `rotates every ${d.RotationPeriodInDays} days, next due ${d.NextRotationDate ? when(d.NextRotationDate) : 'unknown'}`;
}

/** One line: state, spec, usage, current version; then rotation and exportability when set. */
function summary(k: ExternalKey): string {
  const d = describeKey(k);
  const version = d.CurrentVersion !== undefined ? `version ${d.CurrentVersion}` : 'no key material';
  const extras = [d.RotationPeriodInDays !== undefined ? rotationText(d) : undefined, d.Exportable ? 'exportable (xks keys export)' : undefined].filter(Boolean);
  return `${k.id}: ${d.KeyState}, AES_256, ${d.KeyUsage.join(',') || 'NONE'}, ${version}${extras.map((e) => `, ${e}`).join('')}`;
}

/** Open the token, run one lifecycle call, print its result (a key: one line, or JSON; `say` words the line). */
function run(
  cmd: Command,
  json: boolean | undefined,
  fn: (keys: KeyLifecycle) => Promise<ExternalKey | string>,
  say: (k: ExternalKey) => string = summary,
): Promise<void> {
  return withHsm(cmd, async (hsm, loaded) => {
    const out = await fn(openLifecycle(hsm, openCatalogue(hsm, loaded), loaded));
    if (typeof out === 'string') console.log(out);
    else {
      noteAuditVersion(out.current?.version);
      console.log(json ? JSON.stringify(describeKey(out)) : say(out));
    }
  });
}

/** A command on one key that prints what it changed (`say`), or the key as JSON. */
function keyCommand(name: string, description: string, fn: (keys: KeyLifecycle, id: string) => Promise<ExternalKey>, say: (k: ExternalKey) => string): Command {
  return withConfigOption(new Command(name))
    .description(description)
    .argument('<externalKeyId>')
    .option('--json', 'print the key as JSON')
    .action((id: string, opts: { json?: boolean }, cmd: Command) => run(cmd, opts.json, (keys) => fn(keys, id), say));
}

export function keysCommand(): Command {
  const keys = new Command('keys').description('manage external keys in the token');

  keys.addCommand(
    withConfigOption(new Command('create'))
      .description('make a key: AES-256 generated in the HSM (sensitive, non-extractable), or an empty one for imported material')
      .argument('<externalKeyId>', 'the id KMS will use: 1 to 128 characters of A-Za-z0-9._-')
      .addOption(new Option('--usage <list>', 'encrypt, decrypt, both (encrypt,decrypt) or none').default('encrypt,decrypt'))
      .addOption(new Option('--origin <origin>', 'HSM: generated in the HSM; EXTERNAL: no material until you import it').choices(['HSM', 'EXTERNAL']).default('HSM'))
      .option('--rotation-period-days <n>', 'rotate automatically (with `xks keys rotate-due`) every n days, 90 to 2560', parseDays('--rotation-period-days'))
      .option('--exportable', 'allow backup with `xks keys export`, wrapped under a KEK the security officer marked trusted')
      .option('--if-missing', 'succeed without change when the key already exists (for set-up scripts)')
      .option('--json', 'print the key as JSON')
      .action(
        (
          id: string,
          opts: { usage: string; origin: 'HSM' | 'EXTERNAL'; rotationPeriodDays?: number; exportable?: boolean; ifMissing?: boolean; json?: boolean },
          cmd: Command,
        ) =>
          run(cmd, opts.json, async (lifecycle) => {
            if (opts.ifMissing) {
              const existing = await lifecycle.get(id).catch(() => undefined);
              if (existing) return opts.json ? lifecycle.completeCreate(id) : `${summary(await lifecycle.completeCreate(id)).replace(':', ' exists:')}`;
            }
            const made = await lifecycle.create(id, {
              usage: parseUsage(opts.usage),
              origin: opts.origin,
              rotationPeriodDays: opts.rotationPeriodDays,
              exportable: opts.exportable === true,
            });
            noteAuditVersion(made.current?.version);
            return opts.json ? made : `created ${summary(made)}`;
          }),
      ),
  );

  keys.addCommand(
    withConfigOption(new Command('list'))
      .description('list the keys in the token')
      .option('--json', 'print JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        await withHsm(cmd, async (hsm, loaded) => {
          const all = await openCatalogue(hsm, loaded).list();
          if (opts.json) {
            console.log(JSON.stringify(all.map((k) => describeKey(k))));
            return;
          }
          const rows = all.map((k) => {
            const d = describeKey(k);
            const note = k.id === loaded.config.hsm.healthKeyLabel ? 'health check' : [...(d.Problems ?? []), ...(d.DeletionDate ? [`deletion ${when(d.DeletionDate)}`] : [])].join('; ');
            const rotation = d.RotationPeriodInDays !== undefined ? `${d.RotationPeriodInDays}d, next ${d.NextRotationDate?.slice(0, 10) ?? '?'}` : 'off';
            return [k.id, d.KeyState, d.KeyUsage.join(',') || 'NONE', String(d.CurrentVersion ?? '-'), d.Origin, rotation, d.Exportable ? 'yes' : 'no', note];
          });
          const width = Math.max(5, ...rows.map((r) => r[0]!.length));
          const rotationWidth = Math.max(8, ...rows.map((r) => r[5]!.length));
          console.log(`${'KeyId'.padEnd(width)}  ${'State'.padEnd(15)}  ${'Usage'.padEnd(15)}  Version  ${'Origin'.padEnd(8)}  ${'Rotation'.padEnd(rotationWidth)}  Exportable  Note`);
          for (const r of rows) {
            console.log(`${r[0]!.padEnd(width)}  ${r[1]!.padEnd(15)}  ${r[2]!.padEnd(15)}  ${r[3]!.padEnd(7)}  ${r[4]!.padEnd(8)}  ${r[5]!.padEnd(rotationWidth)}  ${r[6]!.padEnd(10)}  ${r[7]}`.trimEnd());
          }
        });
      }),
  );

  keys.addCommand(
    withConfigOption(new Command('describe'))
      .description('show a key, its state, versions and the evidence that it never left the HSM')
      .argument('<externalKeyId>')
      // Always JSON; the flag is accepted so that scripts can pass --json to every keys command alike.
      .option('--json', 'print JSON (the default for describe)')
      .action((id: string, _opts, cmd: Command) =>
        withHsm(cmd, async (hsm, loaded) => {
          const lifecycle = openLifecycle(hsm, openCatalogue(hsm, loaded), loaded);
          const key = await lifecycle.get(id);
          console.log(JSON.stringify(describeKey(key, await lifecycle.encryptionCounts(key)), null, 2));
        }),
      ),
  );

  keys.addCommand(keyCommand('enable', 'enable a disabled key', (k, id) => k.enable(id), (k) => `enabled ${summary(k)}`));
  keys.addCommand(
    keyCommand(
      'disable',
      'disable a key: XKS calls answer DISABLED / InvalidStateException',
      (k, id) => k.disable(id),
      (k) => `disabled ${summary(k)}; KMS sees it DISABLED until \`xks keys enable ${k.id}\``,
    ),
  );
  keys.addCommand(
    keyCommand(
      'cancel-deletion',
      'stop a scheduled deletion; the key comes back Disabled',
      (k, id) => k.cancelDeletion(id),
      (k) => `deletion cancelled for ${summary(k)}, no deletion date; \`xks keys enable ${k.id}\` to use it again`,
    ),
  );
  keys.addCommand(
    keyCommand(
      'allow-exposed',
      'serve the versions of a key whose material can leave the HSM (CKA_SENSITIVE false, or extractable to any key), which are refused otherwise',
      (k, id) => k.allowExposed(id),
      (k) => `${k.id}: exposed version(s) ${(describeKey(k).AllowExposedVersions ?? []).join(', ')} served by your choice (a version exposed later is refused); \`xks keys refuse-exposed ${k.id}\` withdraws it`,
    ),
  );
  keys.addCommand(
    keyCommand(
      'refuse-exposed',
      'withdraw allow-exposed: XKS calls refuse the exposed versions again',
      (k, id) => k.refuseExposed(id),
      (k) => `${k.id}: versions whose material can leave the HSM are refused again`,
    ),
  );

  keys.addCommand(
    withConfigOption(new Command('rotate'))
      .description('rotate now: a new version generated in the HSM becomes current; older versions still decrypt')
      .argument('<externalKeyId>')
      .option('--json', 'print JSON')
      .action((id: string, opts: { json?: boolean }, cmd: Command) =>
        run(cmd, false, async (keys) => {
          const r = await keys.rotate(id);
          noteAuditVersion(r.Version);
          if (opts.json) return JSON.stringify(r);
          // The new version's date starts the next period: say when that is.
          const d = describeKey(await keys.get(id));
          const made = d.Versions.find((v) => v.Version === r.Version)?.CreationDate;
          return `rotated ${id}: version ${r.Version} is current${made ? ` since ${when(made)}` : ''}; ${rotationText(d)}; older versions still decrypt`;
        }),
      ),
  );

  keys.addCommand(
    withConfigOption(new Command('set-rotation'))
      .description('set or clear the automatic rotation period (applied by `xks keys rotate-due`)')
      .argument('<externalKeyId>')
      .option('--period-days <n>', 'rotate every n days, 90 to 2560', parseDays('--period-days'))
      .option('--off', 'no automatic rotation')
      .option('--json', 'print the key as JSON')
      .action((id: string, opts: { periodDays?: number; off?: boolean; json?: boolean }, cmd: Command) => {
        if ((opts.periodDays === undefined) === !opts.off) throw new Error('give either --period-days N or --off');
        let before: KeyDescription | undefined;
        return run(
          cmd,
          opts.json,
          async (keys) => {
            before = describeKey(await keys.get(id));
            return keys.setRotation(id, opts.off ? undefined : opts.periodDays);
          },
          (k) => {
            const was = before?.RotationPeriodInDays !== undefined ? `every ${before.RotationPeriodInDays} days` : 'off';
            const d = describeKey(k);
            return d.RotationPeriodInDays === undefined
              ? `${id}: automatic rotation off (was ${was}); rotate by hand with \`xks keys rotate ${id}\``
              : `${id}: automatic rotation every ${d.RotationPeriodInDays} days (was ${was}); next due ${d.NextRotationDate ? when(d.NextRotationDate) : 'unknown'}, done by \`xks keys rotate-due\``;
          },
        );
      }),
  );

  keys.addCommand(
    withConfigOption(new Command('rotate-due'))
      .description('rotate every enabled key whose rotation period has passed or whose version nears its encryption limit (safe to run from cron, on any number of hosts)')
      .option('--json', 'print JSON')
      .action((opts: { json?: boolean }, cmd: Command) =>
        run(cmd, false, async (keys) => {
          const all = await keys.rotateDue();
          const done = all.filter((r) => r.Rotated);
          const failed = all.filter((r) => r.Error);
          // A key that could not be rotated this time: said on stderr and in the exit status; the next run retries it.
          for (const f of failed) process.stderr.write(`xks: ${f.KeyId} was not rotated: ${f.Error}\n`);
          if (failed.length) process.exitCode = 1;
          if (opts.json) return JSON.stringify(done);
          const why = (r: (typeof done)[number]) => (r.EncryptionsReserved !== undefined ? ` (the version before had ${r.EncryptionsReserved} encryptions reserved)` : '');
          return done.length ? done.map((r) => `rotated ${r.KeyId}: version ${r.Version} is current${why(r)}`).join('\n') : 'no key is due for rotation';
        }),
      ),
  );

  keys.addCommand(
    withConfigOption(new Command('schedule-deletion'))
      .description('make a key unusable now and destroyable (by `xks keys purge-due`) after the waiting period')
      .argument('<externalKeyId>')
      .option(
        '--pending-window-days <n>',
        `days to wait, ${PENDING_WINDOW_DAYS.min} to ${PENDING_WINDOW_DAYS.max}`,
        parseDays('--pending-window-days'),
        PENDING_WINDOW_DAYS.default,
      )
      .option('--json', 'print the key as JSON')
      .action((id: string, opts: { pendingWindowDays: number; json?: boolean }, cmd: Command) =>
        run(
          cmd,
          opts.json,
          (keys) => keys.scheduleDeletion(id, opts.pendingWindowDays),
          (k) => {
            const d = describeKey(k);
            return `${id}: PendingDeletion, unusable now; deletion date ${d.DeletionDate ? when(d.DeletionDate) : 'unknown'} (in ${opts.pendingWindowDays} days: \`xks keys purge-due\` destroys it from then on); \`xks keys cancel-deletion ${id}\` until then`;
          },
        ),
      ),
  );

  keys.addCommand(
    withConfigOption(new Command('purge-due'))
      .description('destroy every key whose deletion date has passed (safe to run from cron)')
      .option('--json', 'print JSON')
      .action((opts: { json?: boolean }, cmd: Command) =>
        run(cmd, false, async (keys) => {
          const purged = await keys.purgeDue();
          if (opts.json) return JSON.stringify(purged);
          return purged.length ? purged.map((id) => `destroyed ${id}`).join('\n') : 'no key is due for deletion';
        }),
      ),
  );
  keys.addCommand(exportCommand());
  keys.addCommand(importWrappedCommand());
  return keys;
}
