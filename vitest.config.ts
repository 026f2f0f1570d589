import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default'],
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary'],
      // The floor is today's level (npm test, 2026-12-01: statements 70.4 %, branches 60.7 %, functions 74.2 %,
      // lines 74.1 %) less one point for run-to-run variance of the recovery paths: raise it as coverage grows.
      thresholds: { lines: 73, statements: 69, functions: 73, branches: 59 },
    },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Pure and fast: run before the integration files.
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Each file has its own sandbox (PM2_HOME, releases dir, ports), so files run side by side, two at a
          // time on CI's 2 cores (three starved the CPU: a fault case timed out); a file's own tests stay
          // sequential (they share its daemon).
          fileParallelism: true,
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
