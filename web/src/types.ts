// Shapes of the Huizhen API (GET /api/v1/openapi.json is the authority).

export type Role =
  | 'grassroots_doctor'
  | 'specialist'
  | 'centre_coordinator'
  | 'stroke_team'
  | 'ambulance'
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
}
