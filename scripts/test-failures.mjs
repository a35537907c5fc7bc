// Prints the failed tests of one vitest JSON report (--reporter=json), one line each with the first lines of the
// failure, so that the end of scripts/test.sh's output (often all a CI page shows) names what failed.
import { readFileSync, existsSync } from 'node:fs';

const [file, kind] = process.argv.slice(2);
if (!existsSync(file)) {
  console.log(`  ${kind}: no report (vitest did not finish)`);
  process.exit(0);
}
const report = JSON.parse(readFileSync(file, 'utf8'));
const strip = (s) => s.replace(/\u001b\[[0-9;]*m/g, '');
for (const suite of report.testResults ?? []) {
  const path = suite.name.replace(`${process.cwd()}/`, '');
  const failed = (suite.assertionResults ?? []).filter((t) => t.status === 'failed');
  if (failed.length === 0 && suite.status === 'failed') {
    console.log(`  ${kind}: ${path}: ${strip(suite.message ?? 'failed outside a test').split('\n').slice(0, 6).join('\n      ')}`);
  }
  for (const t of failed) {
    const why = strip((t.failureMessages ?? []).join('\n')).split('\n').slice(0, 6).join('\n      ');
    console.log(`  ${kind}: ${path} > ${t.fullName}\n      ${why}`);
  }
}
