/**
 * The config changed under a running router (a moved releases dir, a new port, a renamed app, another
 * hold): noticed before anything is touched, in deploy, activate, rollback, status and doctor; applied by
 * deploy, activate and rollback (the router is replaced, its routing state carried over), or refused at once
 * with the command that applies it. The decisions are pure (pm2/router-drift.ts); this file reads PM2 and acts.
 */
import { appPort } from '../config.js';
import { UsageError } from '../errors.js';
import { replaceRouter } from '../pm2/routed-switch.js';
import {
  describeDifferences,
  findRouter,
  parseRouterArgs,
  planRouterChange,
  type RouterDifference,
  type RouterPlan,
  type RunningRouter,
} from '../pm2/router-drift.js';
import { RouterControl } from '../router/client.js';
import { childEnv, phase, warn, type Context } from './context.js';
import { currentRelease, routerControl, routerDefinition } from './switch-release.js';

import type { RouterConfigView, RouterDefinitionView } from './results.js';

export interface RouterConfigCheck {
  /** The router PM2 runs for this app (found by name, else by releases dir or port), null when none. */
  running: RouterDefinitionView | null;
  config: RouterDefinitionView;
  differences: RouterDifference[];
  plan: RouterPlan;
  /** The command that applies a refused change, exactly as it runs. */
  command: string | null;
}

function view(name: string, script: string, args: string[], execMode: string | null): RouterDefinitionView {
  const a = parseRouterArgs(args);
  return { name, releasesDir: a.releasesDir ?? null, port: a.port ?? null, host: a.host ?? null, holdMs: a.holdMs ?? 15_000, script, execMode };
}

/** Reads PM2 (never starts a daemon) and compares. Null when the app does not run behind a router. */
export async function checkRouterConfig(ctx: Context, opts: { allowGap?: boolean } = {}): Promise<RouterConfigCheck | null> {
  return (await inspect(ctx, opts))?.check ?? null;
}

async function inspect(ctx: Context, opts: { allowGap?: boolean }): Promise<{ check: RouterConfigCheck; running: RunningRouter | undefined } | null> {
  if (ctx.config.app.strategy !== 'router' || !ctx.pm2.daemonRunning()) return null;
  const wanted = routerDefinition(ctx);
  const routers = await ctx.pm2.routers({ fresh: true });
  const running = findRouter(routers, { name: wanted.name, releasesDir: ctx.config.releasesDir, port: appPort(ctx.config.app) });
  const plan = planRouterChange(running, wanted, opts);
  const differences = plan.action === 'none' ? [] : plan.differences;
  const check = {
    running: running ? view(running.name, running.script, running.args, running.execMode) : null,
    config: view(wanted.name, wanted.script, wanted.args, null),
    differences,
    plan,
    command: plan.action === 'refuse' ? await applyCommand(ctx) : null,
  };
  return { check, running };
}

/** `pm2-release activate <live id> --replace-router [--config FILE]`, or a deploy when the live release is not retained here. */
async function applyCommand(ctx: Context): Promise<string> {
  const config = configFlag(ctx);
  const live = await currentRelease(ctx).catch(() => null);
  const retained = live ? await ctx.store.get(live) : undefined;
  return retained?.status === 'ready' ? `pm2-release activate ${live} --replace-router${config}` : `pm2-release deploy --replace-router${config}`;
}

/** ` --config FILE` when the config came from a file, so a printed command runs as printed. */
export function configFlag(ctx: Context): string {
  return ctx.configSource !== 'defaults' && ctx.configSource !== 'options' ? ` --config ${shellWord(ctx.configSource)}` : '';
}

function shellWord(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The --json shape of a check (status). */
export function routerConfigView(check: RouterConfigCheck): RouterConfigView {
  return { running: check.running, config: check.config, differences: check.differences, next: check.plan.action, command: check.command };
}

/** The one line that names a difference (status, doctor, the refusal). */
export function routerDriftText(check: RouterConfigCheck): string {
  return `the running router ${check.running?.name ?? ''} differs from the config: ${describeDifferences(check.differences)}`;
}

/** Before the lock: a change this run would not apply is refused at once (exit 2), nothing touched. */
export async function refuseRouterChange(ctx: Context, opts: { allowGap?: boolean } = {}): Promise<void> {
  const check = await checkRouterConfig(ctx, opts);
  if (check?.plan.action !== 'refuse') return;
  throw new UsageError('ROUTER_CONFIG_CHANGED', `${routerDriftText(check)}; ${check.plan.reason}: not applied by this run`, {
    phase: 'config',
    hint: `apply it (one short gap, stated in the runbook) with: ${check.command}`,
  });
}

/**
 * Under the lock, before anything else: replaces a router that differs from the config (a change the plan
 * allows), then saves PM2's list so a reboot brings back the new router.
 */
export async function applyRouterChange(ctx: Context, opts: { allowGap?: boolean } = {}): Promise<void> {
  const found = await inspect(ctx, opts);
  if (!found || found.check.plan.action === 'none' || !found.running) return;
  const { check, running } = found;
  const { plan } = check;
  if (plan.action !== 'replace') return refuseRouterChange(ctx, opts);
  const old = parseRouterArgs(running.args);
  warn(ctx, `${routerDriftText(check)}: replacing it (its routing state carried over)`);
  await phase(ctx, 'route', async () => {
    await replaceRouter(ctx.pm2.withEnv(childEnv(ctx.env)), {
      running,
      router: routerDefinition(ctx),
      from: new RouterControl(old.releasesDir ?? ctx.config.releasesDir, old.app ?? ctx.config.app.name),
      to: routerControl(ctx),
      shared: plan.shared,
      now: () => ctx.now(),
      logger: ctx.logger,
    });
    await ctx.pm2.save();
  });
  if (plan.rename && old.app) ctx.formerApps = [old.app];
  if (old.releasesDir && old.releasesDir !== ctx.config.releasesDir) {
    await ctx.store.recordFormerDir(old.releasesDir);
    warn(
      ctx,
      `releases built in ${old.releasesDir} stay there: \`pm2-release list\` shows them under elsewhere (not rollback targets); the live one serves from there until the next switch`,
    );
  }
}
