// What the server says about a consult's studies, a DICOM JSON data set, and an ECG.

export type SeriesKind = 'image' | 'ecg' | 'wsi' | 'other'

export interface SeriesBrief {
  series_uid: string
  modality: string
  description: string
  instance_count: number
  kind: SeriesKind
  first_instance_uid: string
}

export interface StudyBrief {
  study_uid: string
  series: SeriesBrief[]
  study_date: string | null
  description: string
  instance_count: number
}

/** One attribute of a DICOM JSON data set (PS3.18 F.2). */
export interface DicomAttribute {
  vr: string
  Value?: unknown[]
  BulkDataURI?: string
  InlineBinary?: string
}
export type DicomJson = Record<string, DicomAttribute>

/** One series opened for viewing: the study, the series and the chosen one of its instances. */
export interface SeriesRef {
  study_uid: string
  series_uid: string
}

export interface EcgLead {
  label: string
  microvolts: number[]
}

export interface EcgMachineValue {
  concept: string
  text: string
  value: number | null
  unit: string
}

export interface EcgComputed {
  heart_rate_bpm: number | null
  rr_ms: number | null
  qrs_ms: number | null
  /** Median QT over the beats, QRS onset to T end (ms). */
  qt_ms: number | null
  /** QTc by Bazett (QT/√RR) and by Fridericia (QT/∛RR), RR the mean interval. */
  qtc_bazett_ms: number | null
  qtc_fridericia_ms: number | null
  lead: string
  r_peaks: number[]
}

export interface EcgData {
  sampling_hz: number
  group_label: string
  duration_s: number
  leads: EcgLead[]
  machine: EcgMachineValue[]
  computed: EcgComputed
}

/** The instance an ECG is read from. */
export interface EcgRef {
  study_uid: string
  series_uid: string
  instance_uid: string
}

/** An HL7 aECG file attached to the consult (kind `aecg`), read like a DICOM ECG. */
export interface AecgRef {
  attachment_id: string
}

export type EcgSource = EcgRef | AecgRef

export function isAecg(source: EcgSource): source is AecgRef {
  return 'attachment_id' in source
}

/** One key per ECG, whichever kind. */
export function ecgKey(source: EcgSource): string {
  return isAecg(source) ? `aecg:${source.attachment_id}` : `${source.study_uid}/${source.series_uid}/${source.instance_uid}`
}

export interface UploadState {
  id: string
  offset: number
  size: number
}

export interface UploadResult {
  study_uid: string
  series_uid: string
  instance_uid: string
  stored: boolean
}
