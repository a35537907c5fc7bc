import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One process per test file: a PKCS#11 library must never be loaded in several worker threads of one process
    // (one C_Finalize ends them all), and each file gets its own SoftHSM token.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
