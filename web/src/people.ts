// People by name. The API names the people of a consult where it shows them (requester,
// assignee, timeline actors, report author and signer, message authors, a centre's roster);
// each name seen is remembered here for the session, so that a bare id elsewhere (a
// reassignment's target, a file's uploader, a referral step) is named too when it can be.

import { reactive } from 'vue'
import { i18n } from './i18n'
import { me } from './session'
import type { ConsultDetail, ConsultOut, ReportOut } from './types'

const names = reactive(new Map<string, string>())

export function rememberName(id: string | null | undefined, name: string | null | undefined): void {
  if (id && name) names.set(id, name)
}

/** Remember the names a consult (and, with its detail, its timeline) carries. */
export function rememberConsultNames(consult: ConsultOut | ConsultDetail): void {
  rememberName(consult.requester_user_id, consult.requester_name)
  rememberName(consult.assignee_user_id, consult.assignee_name)
  if ('timeline' in consult) for (const step of consult.timeline) rememberName(step.actor_user_id, step.actor_name)
}

export function rememberReportNames(report: ReportOut): void {
  rememberName(report.author_user_id, report.author_name)
  rememberName(report.signed_by_user_id, report.signer_name)
}

export function clearNames(): void {
  names.clear()
}

/**
 * A user's name: the one given, or one seen before; the signed-in user is marked as such;
 * a user never named by the API shows as a short id.
 */
export function personLabel(id: string | null | undefined, name?: string | null): string {
  const t = i18n.global.t
  if (!id) return t('people.system')
  if (id === me.value?.id) return t('people.me', { name: me.value.display_name })
  const known = name || names.get(id)
  return known ?? t('people.user', { id: id.slice(0, 8) })
}
