// ESLint flat config: typescript-eslint's type-aware rules on src/ and test/ (the bugs a type checker
// alone lets through: floating and misused promises, unsafe any), the recommended JS rules on the plain
// JavaScript of bench/, scripts/, examples/ and the ecosystem file, and on src/ the layout's own rules
// (no import circle; which room may import which). Formatting is Prettier's job.
import js from '@eslint/js';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';
import globals from 'globals';
import tseslint from 'typescript-eslint';

// What the layout forbids (documentation/architecture.md, "The layout"): arrows go from cli/ to commands/
// to lifecycle/ to the gateways, never back. Paths are resolved, so `../cli/format.js` and
// `./cli/format.js` are the same file to these rules.
const layoutZones = [
  {
    // src/bin.ts is the dist/bin.js forward to the CLI's entry: the one file outside cli/ that names it.
    target: ['./src/!(cli)/**', './src/!(bin).ts'],
    from: './src/cli',
    message: 'Nothing outside src/cli/ imports the CLI: return a result and let cli/ print it.',
  },
  {
    target: ['./src/!(cli|commands)/**', './src/!(index|bin).ts'],
    from: './src/commands',
    message: 'Only the CLI and the library entry (index.ts) import a command.',
  },
  {
    target: './src/commands/*.ts',
    from: './src/commands',
    message: 'A command does not import another command: move what they share down into src/lifecycle/.',
  },
  {
    // The router is a house of its own: a bug in deploy code must not reach the front door.
    target: './src/router/!(client).ts',
    from: './src',
    except: ['./router'],
    message: 'The router imports nothing outside src/router/.',
  },
  {
    target: './src/router/!(client).ts',
    from: './src/router/client.ts',
    message: "The router does not import pm2-release's client of it.",
  },
];

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
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // NodeNext imports name the emitted .js file; the source is the .ts beside it, which the cycle check
      // must parse too (only files with these extensions are followed).
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json', '.node'], extensionAlias: { '.js': ['.ts', '.js'] } })],
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      // A circle of value imports (an `import type` is erased, so it is no circle at run time).
      'import-x/no-cycle': 'error',
      // The two rules above see only what resolves: an import the resolver misses must fail, not pass.
      'import-x/no-unresolved': 'error',
      'import-x/no-restricted-paths': ['error', { basePath: import.meta.dirname, zones: layoutZones }],
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
