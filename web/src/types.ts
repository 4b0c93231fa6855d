// Shapes of the Huizhen API (GET /api/v1/openapi.json is the authority).

export type Role =
  | 'grassroots_doctor'
  | 'specialist'
  | 'centre_coordinator'
  | 'stroke_team'
  | 'ambulance'
  | 'interface'
  | 'supervisor'
  | 'admin'

export type Permission =
  | 'self'
  | 'directory.read'
  | 'institution.write'
  | 'user.read'
  | 'user.write'
  | 'patient.read'
  | 'patient.write'
  | 'audit.read'
  | 'consult.request'
  | 'consult.read'
  | 'consult.work'
  | 'consult.coordinate'
  | 'figures.read'
  | 'referral'
  | 'call'
  | 'imaging.read'
  | 'imaging.write'
  | 'imaging.delete'
  | 'lab.results'

export type CentreCode = 'ecg' | 'imaging' | 'consultation' | 'lab' | 'pathology'

export type InstitutionKind =
  | 'lead_hospital'
  | 'township_health_centre'
  | 'village_clinic'
  | 'partner_hospital'

export type Sex = 'male' | 'female'

export interface InstitutionBrief {
  id: string
  code: string
  name_zh: string
  name_en: string
  kind: InstitutionKind
}

export interface Institution extends InstitutionBrief {
  parent_id: string | null
  active: boolean
  created_at: string
}

export interface Me {
  id: string
  username: string
  display_name: string
  institution: InstitutionBrief
  roles: Role[]
  centres: CentreCode[]
  permissions: Permission[]
}

export interface LoginResult {
  token: string
  token_type: string
  csrf_token: string
  expires_at: string
  user: Me
}

export interface Centre {
  code: CentreCode
  name_zh: string
  name_en: string
  institution_id: string
}

export interface Patient {
  id: string
  national_id: string
  name: string
  sex: Sex
  birth_date: string
  health_card_no: string | null
  phone: string | null
  registered_by_institution_id: string
  institution_ids: string[]
  created_at: string
  updated_at: string
  version: number
  linked_existing?: boolean
}

export interface PatientCreate {
  national_id: string
  name: string
  health_card_no?: string
  phone?: string
}

export interface Page<T> {
  items: T[]
  total: number
  limit: number
  offset: number
}

export interface Items<T> {
  items: T[]
}

export type Outcome = 'ok' | 'denied' | 'failed'

export interface AuditEntry {
  id: number
  at: string
  request_id: string
  actor_user_id: string | null
  actor_username: string
  actor_institution_id: string | null
  action: string
  object_type: string
  object_id: string
  patient_id: string | null
  client_address: string
  outcome: Outcome | string
  detail: Record<string, unknown>
}

export interface AuditPage {
  items: AuditEntry[]
  next_before_id: number | null
}

export interface User {
  id: string
  username: string
  display_name: string
  institution_id: string
  roles: Role[]
  centres: CentreCode[]
  active: boolean
  created_at: string
}

/** An RFC 9457 problem document as the server writes it. */
export interface Problem {
  type: string
  title: string
  title_zh?: string
  status: number
  code: string
  detail?: string
  request_id?: string
  errors?: { loc?: (string | number)[]; msg?: string; type?: string }[]
  retry_after?: number
  /** illegal-transition: the consult's state and the actions it allows. */
  state?: string
  allowed?: string[]
}

// -- consults ------------------------------------------------------------------------------

export type ConsultState =
  | 'draft'
  | 'submitted'
  | 'claimed'
  | 'returned'
  | 'escalated'
  | 'reported'
  | 'acknowledged'
  | 'cancelled'

export type Priority = 'routine' | 'urgent' | 'stat'

export type ConsultAction = 'submit' | 'cancel' | 'claim' | 'release' | 'return' | 'reassign' | 'escalate' | 'acknowledge'

export interface PatientBrief {
  id: string
  name: string
  sex: Sex
  birth_date: string
}

export interface ConsultOut {
  id: string
  patient: PatientBrief
  centre: CentreCode
  state: ConsultState
  priority: Priority
  question: string
  clinical_summary: string
  preferred_video_at: string | null
  requester_user_id: string
  requester_name: string
  requester_institution_id: string
  assignee_user_id: string | null
  assignee_name: string | null
  escalated_to_institution_id: string | null
  /** A signed critical value (危急值) not yet acknowledged by the station. */
  critical_pending: boolean
  created_at: string
  submitted_at: string | null
  claimed_at: string | null
  reported_at: string | null
  acknowledged_at: string | null
  due_at: string | null
  version: number
}

export interface TransitionOut {
  action: string
  from_state: ConsultState | null
  to_state: ConsultState
  actor_user_id: string | null
  actor_name: string | null
  at: string
  note: string
  detail: Record<string, unknown>
}

export type ReportState = 'draft' | 'signed'

export interface ReportBrief {
  id: string
  version: number
  state: ReportState
  critical: boolean
  signed_at: string | null
}

export interface ConsultDetail extends ConsultOut {
  timeline: TransitionOut[]
  reports: ReportBrief[]
}

export interface ConsultList {
  items: ConsultOut[]
  total: number
}

export interface ConsultCreate {
  patient_id: string
  centre: CentreCode
  question: string
  clinical_summary?: string
  priority: Priority
  preferred_video_at?: string
  submit?: boolean
}

export interface WorklistItem {
  consult: ConsultOut
  target_minutes: number
  waiting_seconds: number
  /** Negative once the target has passed; null without a due time. */
  seconds_left: number | null
  overdue: boolean
}

export interface Worklist {
  centre: CentreCode
  items: WorklistItem[]
}

// -- reports -------------------------------------------------------------------------------

export type ReferralDirection = 'none' | 'up' | 'down'

export interface Referral {
  direction: ReferralDirection
  green_channel: boolean
  note: string
}

interface ReportCommon {
  findings: string
  impression: string
  recommendation: string
  referral: Referral
  critical: boolean
  critical_note: string
}

export type QtcFormula = 'bazett' | 'fridericia' | 'framingham' | 'hodges'

export interface EcgMeasurements {
  hr_bpm: number | null
  pr_ms: number | null
  qrs_ms: number | null
  qt_ms: number | null
  qtc_ms: number | null
  qtc_formula: QtcFormula | null
  p_axis_deg: number | null
  qrs_axis_deg: number | null
  t_axis_deg: number | null
}

export interface EcgReport extends ReportCommon {
  kind: 'ecg'
  measurements: EcgMeasurements
  rhythm_statements: string[]
}

export interface ImagingReport extends ReportCommon {
  kind: 'imaging'
  modality: string
  body_part: string
  technique: string
}

export interface ConsultationReport extends ReportCommon {
  kind: 'consultation'
  assessment: string
  plan: string
}

export type LabFlag = 'normal' | 'low' | 'high' | 'critical_low' | 'critical_high' | 'abnormal'

export interface LabValue {
  code: string
  name: string
  value: string
  unit: string
  reference_range: string
  flag: LabFlag
}

export interface LabReport extends ReportCommon {
  kind: 'lab'
  results: LabValue[]
}

export interface PathologyReport extends ReportCommon {
  kind: 'pathology'
  specimen: string
  gross: string
  microscopic: string
  diagnosis: string
}

export type ReportContent = EcgReport | ImagingReport | ConsultationReport | LabReport | PathologyReport

export interface ReportOut {
  id: string
  consult_id: string
  version: number
  previous_id: string | null
  centre: CentreCode
  state: ReportState
  content: ReportContent
  critical: boolean
  author_user_id: string
  author_name: string
  created_at: string
  updated_at: string
  signed_by_user_id: string | null
  signer_name: string | null
  signed_at: string | null
  sha256: string | null
}

export interface ReportDetail extends ReportOut {
  /** Every version of the consult's report, oldest first. */
  history: ReportOut[]
}

// -- events --------------------------------------------------------------------------------

export type EventType =
  | 'consult.submitted'
  | 'consult.claimed'
  | 'consult.released'
  | 'consult.returned'
  | 'consult.assigned'
  | 'consult.escalated'
  | 'consult.cancelled'
  | 'consult.acknowledged'
  | 'consult.overdue'
  | 'report.signed'
  | 'report.critical'
  | 'critical.unacknowledged'
  | 'critical.acknowledged'
  | 'lab.results'
  | 'consult.message'
  | 'consult.attachment'
  | 'consult.images'
  | 'referral.requested'
  | 'referral.accepted'
  | 'referral.declined'
  | 'referral.cancelled'
  | 'referral.completed'

export interface FeedEvent {
  id: number
  stream: string
  /** One of EventType, or a type this client does not know yet. */
  type: string
  consult_id: string | null
  payload: Record<string, unknown>
  created_at: string
}

export interface EventPage {
  items: FeedEvent[]
  acked_id: number
  next_after: number
  more: boolean
}

// -- collaboration: roster, messages, attachments ------------------------------------------

export interface RosterEntry {
  id: string
  display_name: string
}

export interface Roster {
  centre: CentreCode
  items: RosterEntry[]
}

export interface Message {
  id: string
  consult_id: string
  author_user_id: string
  author_name: string
  body: string
  created_at: string
  /** Files the author attached to the consult and sent with this message. */
  attachment_ids: string[]
}

export type AttachmentKind = 'file' | 'photo' | 'document'

export interface Attachment {
  id: string
  consult_id: string
  kind: AttachmentKind | string
  filename: string
  content_type: string
  size: number
  sha256: string
  uploaded_by_user_id: string
  created_at: string
}

// -- two-way referral (双向转诊) -------------------------------------------------------------

export type ReferralState = 'requested' | 'accepted' | 'declined' | 'cancelled' | 'completed'
export type ReferralStepAction = 'accept' | 'decline' | 'cancel' | 'complete'

export interface ReferralCreate {
  direction: 'up' | 'down'
  to_institution_id: string
  reason: string
  green_channel: boolean
}

export interface ReferralOut {
  id: string
  consult_id: string
  patient_id: string
  direction: 'up' | 'down' | string
  green_channel: boolean
  from_institution_id: string
  to_institution_id: string
  state: ReferralState
  reason: string
  created_by_user_id: string
  created_at: string
  version: number
}

export interface ReferralStep {
  action: string
  from_state: ReferralState | null
  to_state: ReferralState
  actor_user_id: string
  at: string
  note: string
}

export interface ReferralDetail extends ReferralOut {
  timeline: ReferralStep[]
}

// -- supervision (综合监管) -----------------------------------------------------------------

export interface Turnaround {
  reported: number
  p50_minutes: number | null
  p90_minutes: number | null
  /** Share (0–1) of reported consults answered within their target. */
  within_target: number | null
}

export interface FigureGroup {
  /** A centre code (by_centre) or an institution id (by_institution). */
  key: string
  submitted: number
  by_day: Record<string, number>
  by_priority: Partial<Record<Priority, number>>
  turnaround: Turnaround
  open: number
  overdue_open: number
  flagged_overdue: number
  critical: number
  critical_ack_p50_minutes: number | null
  critical_ack_p90_minutes: number | null
  critical_unacknowledged: number
}

export interface Figures {
  since: string
  until: string
  targets_minutes: Partial<Record<CentreCode, Partial<Record<Priority, number>>>>
  by_centre: FigureGroup[]
  by_institution: FigureGroup[]
}
