// ESLint flat config: typescript-eslint's type-aware rules on src/ and test/ (the bugs a type checker
// alone lets through: floating and misused promises, unsafe any), the recommended JS rules on the plain
// JavaScript of bench/, scripts/, examples/ and the ecosystem file. Formatting is Prettier's job.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'coverage/', 'node_modules/', '**/node_modules/'] },
  js.configs.recommended,
  {
    files: ['**/*.{js,mjs,cjs}'],
    // bench/next-app is a Next.js app: its pages are JSX, which the Next.js compiler reads.
    languageOptions: { parserOptions: { ecmaFeatures: { jsx: true } } },
  },
  {
    files: ['**/*.{js,mjs,cjs}'],
    languageOptions: { globals: { ...globals.node } },
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  {
    // Core ESLint does not see a component used in JSX (no React plugin here): capitalised names are components.
    files: ['bench/next-app/**/*.js'],
    rules: { 'no-unused-vars': ['error', { varsIgnorePattern: '^[A-Z]', argsIgnorePattern: '^_', caughtErrors: 'none' }] },
  },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['vitest.config.ts'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Async functions without await are deliberate where an interface wants a promise.
      '@typescript-eslint/require-await': 'off',
      // Control characters in regexes are deliberate here (ANSI escapes in PM2 and progress output).
      'no-control-regex': 'off',
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  {
    // Tests read JSON (CLI output, pm2 jlist, manifests) and assert on it: typing every parse would be
    // noise, so the unsafe-any family is off there and stays on in src/.
    files: ['test/**/*.ts', 'vitest.config.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
    },
  },
);
