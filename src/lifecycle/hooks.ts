/**
 * Hooks: optional argv commands from the config, run at preDeploy, postBuild (both before the switch: a
 * failure aborts the deploy), postSwitch, postDeploy and onFailure (after it: a failure is reported, not
 * fatal). Typical uses: record the deploy in a ledger, snapshot the VM, notify.
 */
import type { HookName } from '../config.js';
import { BuildError } from '../errors.js';
import { CommandFailure, run } from '../exec.js';
import { childEnv, warn, type Context } from './context.js';

export interface HookVars {
  RELEASE_ID?: string;
  RELEASE_SHA?: string;
  RELEASE_DIR?: string;
  PREVIOUS_RELEASE_ID?: string | null;
  FAILURE_CODE?: string;
  FAILURE_PHASE?: string;
}

const FATAL: HookName[] = ['preDeploy', 'postBuild'];

/** Runs the hook if configured. Returns false when a non-fatal hook failed (already reported as a warning). */
export async function runHook(ctx: Context, name: HookName, vars: HookVars, cwd: string): Promise<boolean> {
  const argv = ctx.config.hooks[name];
  if (!argv) return true;
  const env: Record<string, string | undefined> = {
    ...childEnv(ctx.env),
    PM2_APP: ctx.config.app.name,
    RELEASE_HOOK: name,
    RELEASE_ID: vars.RELEASE_ID ?? '',
    RELEASE_SHA: vars.RELEASE_SHA ?? '',
    RELEASE_DIR: vars.RELEASE_DIR ?? '',
    PREVIOUS_RELEASE_ID: vars.PREVIOUS_RELEASE_ID ?? '',
    ...(vars.FAILURE_CODE ? { FAILURE_CODE: vars.FAILURE_CODE, FAILURE_PHASE: vars.FAILURE_PHASE ?? '' } : {}),
  };
  const started = performance.now();
  ctx.emit({ type: 'phase', phase: 'hook', state: 'start' });
  ctx.logger.info({ hook: name }, `hook ${name}…`);
  try {
    await run(argv, {
      cwd,
      logger: ctx.logger,
      baseEnv: env,
      redactor: ctx.redactor,
      // onFailure must run even when the failure is a cancellation: only its timeout bounds it.
      signal: name === 'onFailure' ? undefined : ctx.signal,
      timeoutMs: ctx.config.hooks.timeoutMs,
      captureStdout: false,
      onLine: (line, stream) => ctx.emit({ type: 'output', phase: 'hook', stream, line }),
    });
    const durationMs = Math.round(performance.now() - started);
    ctx.durations[`hook:${name}`] = durationMs;
    ctx.emit({ type: 'phase', phase: 'hook', state: 'end', durationMs });
    return true;
  } catch (err) {
    const durationMs = Math.round(performance.now() - started);
    const reason = err instanceof CommandFailure ? `${err.command} ${err.reason}` : (err as Error).message;
    const tail = err instanceof CommandFailure ? ctx.redactor.redact(err.tail) : undefined;
    ctx.emit({ type: 'phase', phase: 'hook', state: 'fail', durationMs, code: 'HOOK_FAILED', message: reason });
    if (FATAL.includes(name))
      throw new BuildError('HOOK_FAILED', `${name} hook failed: ${reason}`, {
        phase: 'hook',
        hint: `the deploy stopped before the switch; fix or remove hooks.${name}`,
        outputTail: tail,
        releaseId: vars.RELEASE_ID,
      });
    warn(ctx, `${name} hook failed (not fatal): ${reason}`);
    return false;
  }
}
