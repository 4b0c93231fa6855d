// Report content per centre: an empty form, a copy that always has every field, and the
// QTc formulas offered by the ECG form.

import type {
  CentreCode,
  EcgMeasurements,
  LabFlag,
  LabValue,
  QtcFormula,
  Referral,
  ReportContent,
} from './types'

export const QTC_FORMULAS: readonly QtcFormula[] = ['bazett', 'fridericia', 'framingham', 'hodges']
export const LAB_FLAGS: readonly LabFlag[] = ['normal', 'low', 'high', 'critical_low', 'critical_high', 'abnormal']
export const MEASUREMENT_KEYS = [
  'hr_bpm',
  'pr_ms',
  'qrs_ms',
  'qt_ms',
  'qtc_ms',
  'p_axis_deg',
  'qrs_axis_deg',
  't_axis_deg',
] as const satisfies readonly (keyof EcgMeasurements)[]
export type MeasurementKey = (typeof MEASUREMENT_KEYS)[number]

/** Allowed ranges (the server's, server/reports.py). */
export const MEASUREMENT_RANGE: Record<MeasurementKey, [number, number]> = {
  hr_bpm: [10, 350],
  pr_ms: [0, 600],
  qrs_ms: [20, 400],
  qt_ms: [100, 800],
  qtc_ms: [100, 900],
  p_axis_deg: [-180, 360],
  qrs_axis_deg: [-180, 360],
  t_axis_deg: [-180, 360],
}

function referral(r?: Partial<Referral>): Referral {
  return { direction: r?.direction ?? 'none', green_channel: r?.green_channel ?? false, note: r?.note ?? '' }
}

function measurements(m?: Partial<EcgMeasurements>): EcgMeasurements {
  return {
    hr_bpm: m?.hr_bpm ?? null,
    pr_ms: m?.pr_ms ?? null,
    qrs_ms: m?.qrs_ms ?? null,
    qt_ms: m?.qt_ms ?? null,
    qtc_ms: m?.qtc_ms ?? null,
    qtc_formula: m?.qtc_formula ?? null,
    p_axis_deg: m?.p_axis_deg ?? null,
    qrs_axis_deg: m?.qrs_axis_deg ?? null,
    t_axis_deg: m?.t_axis_deg ?? null,
  }
}

export function emptyLabValue(): LabValue {
  return { code: '', name: '', value: '', unit: '', reference_range: '', flag: 'normal' }
}

/** A complete, independent copy of `content` (or an empty report) for a centre. */
export function normaliseContent(centre: CentreCode, content?: Partial<ReportContent> | null): ReportContent {
  const c = (content ?? {}) as Record<string, unknown> & Partial<ReportContent>
  const common = {
    findings: typeof c.findings === 'string' ? c.findings : '',
    impression: typeof c.impression === 'string' ? c.impression : '',
    recommendation: typeof c.recommendation === 'string' ? c.recommendation : '',
    referral: referral(c.referral),
    critical: c.critical === true,
    critical_note: typeof c.critical_note === 'string' ? c.critical_note : '',
  }
  const text = (key: string) => (typeof c[key] === 'string' ? (c[key] as string) : '')
  switch (centre) {
    case 'ecg':
      return {
        kind: 'ecg',
        ...common,
        measurements: measurements(c.measurements as Partial<EcgMeasurements> | undefined),
        rhythm_statements: Array.isArray(c.rhythm_statements) ? [...(c.rhythm_statements as string[])] : [],
      }
    case 'imaging':
      return { kind: 'imaging', ...common, modality: text('modality'), body_part: text('body_part'), technique: text('technique') }
    case 'consultation':
      return { kind: 'consultation', ...common, assessment: text('assessment'), plan: text('plan') }
    case 'lab':
      return {
        kind: 'lab',
        ...common,
        results: Array.isArray(c.results) ? (c.results as LabValue[]).map((v) => ({ ...emptyLabValue(), ...v })) : [],
      }
    case 'pathology':
      return {
        kind: 'pathology',
        ...common,
        specimen: text('specimen'),
        gross: text('gross'),
        microscopic: text('microscopic'),
        diagnosis: text('diagnosis'),
      }
  }
}

/** QTc in ms from QT (ms) and heart rate (bpm) by the chosen formula. */
export function qtc(formula: QtcFormula, qtMs: number, hrBpm: number): number {
  const rr = 60 / hrBpm // seconds
  switch (formula) {
    case 'bazett':
      return Math.round(qtMs / Math.sqrt(rr))
    case 'fridericia':
      return Math.round(qtMs / Math.cbrt(rr))
    case 'framingham':
      return Math.round(qtMs + 154 * (1 - rr))
    case 'hodges':
      return Math.round(qtMs + 1.75 * (hrBpm - 60))
  }
}

/** low/high/normal from a numeric value and an "a-b" (or "<b", ">a") reference range; null if unreadable. */
export function flagFromRange(value: string, range: string): LabFlag | null {
  const v = Number(value.trim())
  if (!value.trim() || !Number.isFinite(v)) return null
  const r = range.replace(/\s/g, '').replace(/[～~—–]/g, '-')
  let m = /^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$/.exec(r)
  if (m) {
    const [lo, hi] = [Number(m[1]), Number(m[2])]
    return v < lo ? 'low' : v > hi ? 'high' : 'normal'
  }
  m = /^(<|≤|<=)(-?\d+(?:\.\d+)?)$/.exec(r)
  if (m) return v > Number(m[2]) ? 'high' : 'normal'
  m = /^(>|≥|>=)(-?\d+(?:\.\d+)?)$/.exec(r)
  if (m) return v < Number(m[2]) ? 'low' : 'normal'
  return null
}

export function isCriticalFlag(flag: LabFlag): boolean {
  return flag === 'critical_low' || flag === 'critical_high'
}

/** Common rhythm statements offered by the ECG form (free text is allowed too). */
export const RHYTHM_STATEMENTS_ZH = [
  '窦性心律',
  '窦性心动过速',
  '窦性心动过缓',
  '窦性心律不齐',
  '心房颤动',
  '心房扑动',
  '室上性心动过速',
  '室性心动过速',
  '房性早搏',
  '室性早搏',
  '一度房室传导阻滞',
  '二度房室传导阻滞',
  '三度房室传导阻滞',
  '完全性右束支传导阻滞',
  '完全性左束支传导阻滞',
  '左心室肥厚',
  'ST 段抬高',
  'ST 段压低',
  'T 波倒置',
  '急性心肌梗死',
  'QT 间期延长',
] as const

export const MODALITIES = ['DR', 'CR', 'DX', 'CT', 'MR', 'US', 'MG', 'RF', 'XA'] as const
