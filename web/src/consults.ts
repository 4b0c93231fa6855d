// Consults and reports: API calls, who may do what (mirroring server/policy.py; the server
// decides), and how states, priorities and durations are shown.

import { api } from './api'
import { institutionById } from './directory'
import { i18n } from './i18n'
import { rememberConsultNames, rememberName, rememberReportNames } from './people'
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
  Roster,
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
  critical_pending?: boolean
  limit?: number
  offset?: number
}): Promise<ConsultList> {
  return api.get<ConsultList>('/api/v1/consults', query).then((list) => {
    list.items.forEach(rememberConsultNames)
    return list
  })
}

function named(detail: ConsultDetail): ConsultDetail {
  rememberConsultNames(detail)
  return detail
}

export function getConsult(id: string): Promise<ConsultDetail> {
  return api.get<ConsultDetail>(`/api/v1/consults/${enc(id)}`).then(named)
}

export function createConsult(body: ConsultCreate): Promise<ConsultDetail> {
  return api.post<ConsultDetail>('/api/v1/consults', body).then(named)
}

export function consultAction(id: string, action: ConsultAction, body: Record<string, unknown> = {}): Promise<ConsultDetail> {
  return api.post<ConsultDetail>(`/api/v1/consults/${enc(id)}/${action}`, body).then(named)
}

export function getWorklist(centre: CentreCode): Promise<Worklist> {
  return api.get<Worklist>(`/api/v1/centres/${enc(centre)}/worklist`).then((list) => {
    list.items.forEach((item) => rememberConsultNames(item.consult))
    return list
  })
}

/** The active specialists of a centre (its staff), for the coordinator's reassignment. */
export function getSpecialists(centre: CentreCode): Promise<Roster> {
  return api.get<Roster>(`/api/v1/centres/${enc(centre)}/specialists`).then((roster) => {
    for (const entry of roster.items) rememberName(entry.id, entry.display_name)
    return roster
  })
}

function reportNamed(report: ReportDetail): ReportDetail {
  rememberReportNames(report)
  report.history?.forEach(rememberReportNames)
  return report
}

export function getReport(id: string): Promise<ReportDetail> {
  return api.get<ReportDetail>(`/api/v1/reports/${enc(id)}`).then(reportNamed)
}

export function createReport(consultId: string, content: ReportContent): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/consults/${enc(consultId)}/reports`, { content }).then(reportNamed)
}

export function saveReport(id: string, content: ReportContent): Promise<ReportDetail> {
  return api.patch<ReportDetail>(`/api/v1/reports/${enc(id)}`, { content }).then(reportNamed)
}

export function signReport(id: string): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/reports/${enc(id)}/sign`).then(reportNamed)
}

export function amendReport(id: string): Promise<ReportDetail> {
  return api.post<ReportDetail>(`/api/v1/reports/${enc(id)}/amend`).then(reportNamed)
}

/** The signed report as an A4 PDF (served inline: the browser's viewer prints or saves it). */
export function reportPdfUrl(id: string): string {
  return `/api/v1/reports/${enc(id)}/pdf`
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

/** The advice of a signed report, when it advises a referral. */
export function referralAdvice(content: ReportContent | null | undefined): ReportContent['referral'] | null {
  const r = content?.referral
  return r && (r.direction === 'up' || r.direction === 'down') ? r : null
}
