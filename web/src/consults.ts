// Consults and reports: API calls, who may do what (mirroring server/policy.py; the server
// decides), and how states, priorities and durations are shown.

import { api } from './api'
import { institutionById } from './directory'
import { i18n } from './i18n'
import { hasRole, me } from './session'
import type {
  CentreCode,
  ConsultAction,
  ConsultCreate,
  ConsultDetail,
  ConsultList,
  ConsultOut,
  ConsultState,
  Priority,
  ReportBrief,
  ReportContent,
  ReportDetail,
  Worklist,
} from './types'

export const CENTRE_CODES: readonly CentreCode[] = ['ecg', 'imaging', 'consultation', 'lab', 'pathology']
export const PRIORITIES: readonly Priority[] = ['stat', 'urgent', 'routine']
export const STATES: readonly ConsultState[] = [
  'draft',
  'submitted',
  'claimed',
  'returned',
  'escalated',
  'reported',
  'acknowledged',
  'cancelled',
]

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'
type TagEffect = 'dark' | 'light' | 'plain'

/** Tag colour per state: what needs someone's action stands out. */
export const STATE_TAG: Record<ConsultState, { type: TagType; effect: TagEffect }> = {
  draft: { type: 'info', effect: 'plain' },
  submitted: { type: 'primary', effect: 'light' },
  claimed: { type: 'warning', effect: 'light' },
  returned: { type: 'danger', effect: 'light' },
  escalated: { type: 'warning', effect: 'plain' },
  reported: { type: 'success', effect: 'dark' },
  acknowledged: { type: 'success', effect: 'light' },
  cancelled: { type: 'info', effect: 'light' },
}

export const PRIORITY_TAG: Record<Priority, { type: TagType; effect: TagEffect }> = {
  stat: { type: 'danger', effect: 'dark' },
  urgent: { type: 'warning', effect: 'dark' },
  routine: { type: 'info', effect: 'plain' },
}

// -- API ------------------------------------------------------------------------------------

const enc = encodeURIComponent

export function listConsults(query: {
  state?: ConsultState | ''
  centre?: CentreCode | ''
  patient_id?: string
  limit?: number
  offset?: number
}): Promise<ConsultList> {
  return api.get<ConsultList>('/api/v1/consults', query)
}

export function getConsult(id: string): Promise<ConsultDetail> {
  return api.get<ConsultDetail>(`/api/v1/consults/${enc(id)}`)
}

export function createConsult(body: ConsultCreate): Promise<ConsultDetail> {
  return api.post<ConsultDetail>('/api/v1/consults', body)
}

export function consultAction(id: string, action: ConsultAction, body: Record<string, unknown> = {}): Promise<ConsultDetail> {
  return api.post<ConsultDetail>(`/api/v1/consults/${enc(id)}/${action}`, body)
}

export function getWorklist(centre: CentreCode): Promise<Worklist> {
  return api.get<Worklist>(`/api/v1/centres/${enc(centre)}/worklist`)
}

export function getReport(id: string): Promise<ReportDetail> {
  return api.get<ReportDetail>(`/api/v1/reports/${enc(id)}`)
}

export function createReport(consultId: string, content: ReportContent): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/consults/${enc(consultId)}/reports`, { content })
}

export function saveReport(id: string, content: ReportContent): Promise<ReportDetail> {
  return api.patch<ReportDetail>(`/api/v1/reports/${enc(id)}`, { content })
}

export function signReport(id: string): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/reports/${enc(id)}/sign`)
}

export function amendReport(id: string): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/reports/${enc(id)}/amend`)
}

/** The newest version of the report, whatever its state. */
export function latestReport(reports: ReportBrief[]): ReportBrief | null {
  return reports.reduce<ReportBrief | null>((best, r) => (!best || r.version > best.version ? r : best), null)
}

/** The newest signed version: what the requesting station reads. */
export function latestSigned(reports: ReportBrief[]): ReportBrief | null {
  return latestReport(reports.filter((r) => r.state === 'signed'))
}

// -- who may do what (the server decides; these only choose which buttons to show) -----------

/** A specialist or coordinator of `centre` at the lead hospital. */
export function centreSide(centre: CentreCode): boolean {
  const user = me.value
  if (!user) return false
  return (
    (user.roles.includes('specialist') || user.roles.includes('centre_coordinator')) &&
    user.centres.includes(centre) &&
    user.institution.kind === 'lead_hospital'
  )
}

/** The requesting station: the requester's institution, or the township above a village clinic. */
export function requesterSide(consult: Pick<ConsultOut, 'requester_institution_id'>): boolean {
  const user = me.value
  if (!user || !hasRole('grassroots_doctor')) return false
  const requester = consult.requester_institution_id
  return requester === user.institution.id || institutionById(requester)?.parent_id === user.institution.id
}

/** May claim and report: a specialist of the centre, or of the partner hospital it was escalated to. */
export function canWork(consult: Pick<ConsultOut, 'centre' | 'escalated_to_institution_id'>): boolean {
  const user = me.value
  if (!user || !user.roles.includes('specialist')) return false
  return centreSide(consult.centre) || (consult.escalated_to_institution_id !== null && consult.escalated_to_institution_id === user.institution.id)
}

export function canCoordinate(centre: CentreCode): boolean {
  return hasRole('centre_coordinator') && centreSide(centre)
}

export function claimedByMe(consult: Pick<ConsultOut, 'assignee_user_id'>): boolean {
  return consult.assignee_user_id !== null && consult.assignee_user_id === me.value?.id
}

// -- display --------------------------------------------------------------------------------

/**
 * A user the API names only by id. The signed-in user is named; others by a short id until
 * the API returns display names with consults (see the web README).
 */
export function personLabel(id: string | null | undefined): string {
  const t = i18n.global.t
  if (!id) return t('people.system')
  if (id === me.value?.id) return t('people.me', { name: me.value.display_name })
  return t('people.user', { id: id.slice(0, 8) })
}

/** 5:07, 1:02:03, 2天 03:04:05 (absolute value; the caller says late or left). */
export function formatDuration(totalSeconds: number): string {
  const t = i18n.global.t
  const s = Math.abs(Math.trunc(totalSeconds))
  const days = Math.floor(s / 86_400)
  const hours = Math.floor((s % 86_400) / 3_600)
  const minutes = Math.floor((s % 3_600) / 60)
  const seconds = s % 60
  const pad = (n: number) => String(n).padStart(2, '0')
  const clock = hours || days ? `${days ? pad(hours) : hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`
  return days ? t('time.days', { n: days, clock }) : clock
}

/** A seconds-left figure from the server, carried forward by the client clock since it was read. */
export function secondsLeftNow(secondsLeft: number | null, fetchedAt: number, now: number): number | null {
  return secondsLeft === null ? null : secondsLeft - Math.floor((now - fetchedAt) / 1000)
}

/** Seconds left to a due time, from the client clock (for pages without a worklist reading). */
export function secondsUntil(iso: string | null, now: number): number | null {
  if (!iso) return null
  const due = new Date(iso).getTime()
  return Number.isNaN(due) ? null : Math.floor((due - now) / 1000)
}

export function consultEvent(type: string): boolean {
  return type.startsWith('consult.') || type.startsWith('report.') || type.startsWith('critical.')
}
