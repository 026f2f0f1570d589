import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default'],
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary'],
      // The floor is today's level (measured by `npm test`): it may only go up.
      thresholds: { lines: 0, statements: 0, functions: 0, branches: 0 },
    },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Each file has its own sandbox (PM2_HOME, releases dir, ports), so files run side by side; two at a
          // time on CI's 2 cores (a file's own tests stay sequential: they share its daemon).
          fileParallelism: true,
          maxWorkers: 2,
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
