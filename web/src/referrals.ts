// Two-way referral (双向转诊): API calls, who sends and who answers (mirroring
// server/referrals.py; the server decides), and the count of incoming requests in the menu.

import { ref } from 'vue'
import { api } from './api'
import { institutionById } from './directory'
import { hasRole, me } from './session'
import type {
  ConsultOut,
  Institution,
  Items,
  ReferralCreate,
  ReferralDetail,
  ReferralOut,
  ReferralState,
  ReferralStepAction,
} from './types'

const enc = encodeURIComponent

export const REFERRAL_STATES: readonly ReferralState[] = ['requested', 'accepted', 'declined', 'cancelled', 'completed']
/** Referrals still under way: a new one in the same direction would be a duplicate. */
export const ACTIVE_REFERRAL_STATES: readonly ReferralState[] = ['requested', 'accepted']

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'
export const REFERRAL_STATE_TAG: Record<ReferralState, { type: TagType; effect: 'dark' | 'light' | 'plain' }> = {
  requested: { type: 'warning', effect: 'dark' },
  accepted: { type: 'primary', effect: 'light' },
  declined: { type: 'danger', effect: 'light' },
  cancelled: { type: 'info', effect: 'light' },
  completed: { type: 'success', effect: 'light' },
}

export type Box = 'incoming' | 'outgoing'

export function listReferrals(query: { box?: Box; state?: ReferralState | '' } = {}): Promise<ReferralOut[]> {
  return api.get<Items<ReferralOut>>('/api/v1/referrals', query).then((body) => body.items)
}

export function getReferral(id: string): Promise<ReferralDetail> {
  return api.get<ReferralDetail>(`/api/v1/referrals/${enc(id)}`)
}

export function openReferral(consultId: string, body: ReferralCreate): Promise<ReferralDetail> {
  return api.post<ReferralDetail>(`/api/v1/consults/${enc(consultId)}/referrals`, body)
}

export function referralStep(id: string, action: ReferralStepAction, note: string): Promise<ReferralDetail> {
  return api.post<ReferralDetail>(`/api/v1/referrals/${enc(id)}/${action}`, { note })
}

// -- who sends, who answers (the server decides; these only choose which buttons to show) ----

/** The station's own institution, or (for a township) one of its village clinics. */
function inCare(institutionId: string): boolean {
  const own = me.value?.institution.id
  return institutionId === own || (!!own && institutionById(institutionId)?.parent_id === own)
}

/** Hospitals answer through their lead-hospital coordinators (the admissions desk of the
 * centres) or their partner-hospital specialists. */
function hospitalDesk(): boolean {
  const kind = me.value?.institution.kind
  return (kind === 'lead_hospital' && hasRole('centre_coordinator')) || (kind === 'partner_hospital' && hasRole('specialist'))
}

/** May answer (accept, decline, complete) a referral to this institution. */
export function answersFor(institutionId: string): boolean {
  if (hasRole('grassroots_doctor')) return inCare(institutionId)
  return hospitalDesk() && institutionId === me.value?.institution.id
}

/** May cancel a referral sent from this institution. */
export function sendsFor(institutionId: string): boolean {
  if (hasRole('grassroots_doctor')) return inCare(institutionId)
  const user = me.value
  const hospital = user?.institution.kind === 'lead_hospital' || user?.institution.kind === 'partner_hospital'
  return hospital && (hasRole('specialist') || hasRole('centre_coordinator')) && institutionId === user?.institution.id
}

/** Receives referrals at all: has an incoming box (and the menu badge). */
export function receivesReferrals(): boolean {
  return hasRole('grassroots_doctor') || hospitalDesk()
}

/** Where an upward referral from the consult's station may go: the hospitals, and a village
 * clinic's own township. The lead hospital comes first. */
export function upwardTargets(consult: Pick<ConsultOut, 'requester_institution_id'>, all: Institution[]): Institution[] {
  const origin = all.find((i) => i.id === consult.requester_institution_id)
  const order = { lead_hospital: 0, township_health_centre: 1, partner_hospital: 2, village_clinic: 3 } as const
  return all
    .filter(
      (i) =>
        i.active &&
        (i.kind === 'lead_hospital' ||
          i.kind === 'partner_hospital' ||
          (origin?.kind === 'village_clinic' && i.id === origin.parent_id)),
    )
    .sort((a, b) => order[a.kind] - order[b.kind])
}

/** Where a downward referral may go: the station that asked first, then its township, then the
 * other townships and village clinics. */
export function downwardTargets(consult: Pick<ConsultOut, 'requester_institution_id'>, all: Institution[]): Institution[] {
  const origin = all.find((i) => i.id === consult.requester_institution_id)
  const rank = (i: Institution) => (i.id === origin?.id ? 0 : i.id === origin?.parent_id ? 1 : i.kind === 'township_health_centre' ? 2 : 3)
  return all
    .filter((i) => i.active && (i.kind === 'township_health_centre' || i.kind === 'village_clinic'))
    .sort((a, b) => rank(a) - rank(b) || a.code.localeCompare(b.code))
}

// -- the menu's count of incoming requests -------------------------------------------------------

export const incomingRequested = ref(0)
let loading: Promise<void> | null = null
let again = false

async function load(): Promise<void> {
  incomingRequested.value = (await listReferrals({ box: 'incoming', state: 'requested' })).length
}

/** Re-read the count; calls made while a read runs are folded into one more read. */
export function refreshReferralCount(): Promise<void> {
  if (loading) {
    again = true
    return loading
  }
  loading = load()
    .catch((error: unknown) => console.warn('referral count refresh failed', error))
    .finally(() => {
      loading = null
      if (again) {
        again = false
        void refreshReferralCount()
      }
    })
  return loading
}

export function clearReferralCount(): void {
  incomingRequested.value = 0
}

export function referralEvent(type: string): boolean {
  return type.startsWith('referral.')
}
