/** doctor: every host check (lifecycle/checks.ts), reported; it only reads. */
import { checkAll, type DoctorResult } from '../lifecycle/checks.js';
import { createContext, type CommonOptions } from '../lifecycle/context.js';

export type DoctorOptions = CommonOptions;

export async function doctor(opts: DoctorOptions = {}): Promise<DoctorResult> {
  return checkAll(createContext(opts));
}
