// ECG: the paper layout (25 mm/s, 10 mm/mV), the machine's values beside ours, and which ECG
// of a consult the report form is filled from.

import { ref } from 'vue'
import { consultAecgs, consultStudies, getEcg } from './api'
import type { EcgData, EcgMachineValue, EcgSource } from './types'

export const MM_PER_S = 25
export const MM_PER_MV = 10

// -- layout --------------------------------------------------------------------------------------

/** One trace on the paper: a lead from t0 to t1 seconds, starting at x (mm), baseline y (mm). */
export interface EcgCell {
  lead: string
  t0: number
  t1: number
  x: number
  y: number
}

export interface EcgLayout {
  width: number
  height: number
  cells: EcgCell[]
  /** The rhythm strip (the full recording of one lead), if the layout has one. */
  rhythm: EcgCell | null
  /** Where each row's 1 mV calibration pulse stands. */
  pulses: { x: number; y: number }[]
}

const STANDARD: string[][] = [
  ['I', 'aVR', 'V1', 'V4'],
  ['II', 'aVL', 'V2', 'V5'],
  ['III', 'aVF', 'V3', 'V6'],
]
const MARGIN = 10 // mm before the traces: the calibration pulse
const ROW = 40 // mm per row

/** The standard 3×4 with a lead II rhythm strip when the 12 leads are there; else one row per lead. */
export function layoutFor(data: EcgData): EcgLayout {
  const labels = new Set(data.leads.map((l) => l.label))
  const duration = data.duration_s
  const standard = STANDARD.every((row) => row.every((l) => labels.has(l))) && duration >= 4
  const cells: EcgCell[] = []
  const pulses: { x: number; y: number }[] = []
  if (standard) {
    const column = duration / 4
    STANDARD.forEach((row, r) => {
      row.forEach((lead, c) => {
        cells.push({ lead, t0: c * column, t1: (c + 1) * column, x: MARGIN + c * column * MM_PER_S, y: ROW * r + ROW / 2 })
      })
      pulses.push({ x: 2, y: ROW * r + ROW / 2 })
    })
    const rhythmLead = labels.has('II') ? 'II' : (data.leads[0]?.label ?? 'II')
    const rhythm = { lead: rhythmLead, t0: 0, t1: duration, x: MARGIN, y: ROW * 3 + ROW / 2 }
    cells.push(rhythm)
    pulses.push({ x: 2, y: rhythm.y })
    return { width: MARGIN + duration * MM_PER_S + 4, height: ROW * 4, cells, rhythm, pulses }
  }
  data.leads.forEach((lead, r) => {
    cells.push({ lead: lead.label, t0: 0, t1: duration, x: MARGIN, y: ROW * r + ROW / 2 })
    pulses.push({ x: 2, y: ROW * r + ROW / 2 })
  })
  return { width: MARGIN + duration * MM_PER_S + 4, height: Math.max(ROW, ROW * data.leads.length), cells, rhythm: null, pulses }
}

/**
 * An SVG path (in mm) of one cell's trace. Where there are more samples than screen pixels, each
 * pixel column keeps its minimum and maximum so that no QRS spike is lost.
 */
export function tracePath(data: EcgData, cell: EcgCell, pxPerMm: number): string {
  const lead = data.leads.find((l) => l.label === cell.lead)
  if (!lead) return ''
  const fs = data.sampling_hz
  const i0 = Math.max(0, Math.round(cell.t0 * fs))
  const i1 = Math.min(lead.microvolts.length, Math.round(cell.t1 * fs))
  const mmPerSample = MM_PER_S / fs
  const y = (uv: number) => (cell.y - (uv / 1000) * MM_PER_MV).toFixed(2)
  const x = (i: number) => (cell.x + (i - i0) * mmPerSample).toFixed(2)
  const samplesPerPx = 1 / (mmPerSample * pxPerMm)
  const parts: string[] = []
  if (samplesPerPx <= 2) {
    for (let i = i0; i < i1; i++) parts.push(`${parts.length ? 'L' : 'M'}${x(i)} ${y(lead.microvolts[i] ?? 0)}`)
    return parts.join('')
  }
  const step = Math.max(1, Math.floor(samplesPerPx))
  for (let start = i0; start < i1; start += step) {
    let lo = start
    let hi = start
    const end = Math.min(i1, start + step)
    for (let i = start; i < end; i++) {
      const v = lead.microvolts[i] ?? 0
      if (v < (lead.microvolts[lo] ?? 0)) lo = i
      if (v > (lead.microvolts[hi] ?? 0)) hi = i
    }
    for (const i of lo <= hi ? [lo, hi] : [hi, lo]) parts.push(`${parts.length ? 'L' : 'M'}${x(i)} ${y(lead.microvolts[i] ?? 0)}`)
  }
  return parts.join('')
}

/** The 1 mm and 5 mm grid lines (two paths, in mm). */
export function gridPaths(width: number, height: number): { minor: string; major: string } {
  const minor: string[] = []
  const major: string[] = []
  for (let x = 0; x <= width; x++) (x % 5 ? minor : major).push(`M${x} 0V${height}`)
  for (let y = 0; y <= height; y++) (y % 5 ? minor : major).push(`M0 ${y}H${width}`)
  return { minor: minor.join(''), major: major.join('') }
}

// -- the machine's values beside ours ------------------------------------------------------------

export const FILL_KEYS = ['hr_bpm', 'rr_ms', 'pr_ms', 'qrs_ms', 'qt_ms', 'qtc_ms', 'p_axis_deg', 'qrs_axis_deg', 't_axis_deg'] as const
export type FillKey = (typeof FILL_KEYS)[number]

/** Concept names (code meanings) a machine may use for each value, lower case. */
const CONCEPTS: Record<FillKey, string[]> = {
  hr_bpm: ['heart rate', 'ventricular heart rate', 'ventricular rate', 'atrial heart rate'],
  rr_ms: ['rr interval'],
  pr_ms: ['pr interval', 'pq interval'],
  qrs_ms: ['qrs duration', 'qrs interval'],
  qt_ms: ['qt interval'],
  qtc_ms: ['qtc interval', 'qtc'],
  p_axis_deg: ['p axis'],
  qrs_axis_deg: ['qrs axis', 'r axis'],
  t_axis_deg: ['t axis'],
}

export interface FillRow {
  key: FillKey
  machine: number | null
  computed: number | null
}

function machineValue(machine: EcgMachineValue[], key: FillKey): number | null {
  const names = CONCEPTS[key]
  for (const m of machine) {
    // A zero interval is a machine's "not measured" (pydicom's sample has PP Interval 0 ms).
    if (m.value !== null && names.includes(m.concept.trim().toLowerCase()) && (m.value !== 0 || key.endsWith('_deg'))) return m.value
  }
  return null
}

/** What "Fill from ECG" puts in the report: the values the reader kept, and the statements. */
export interface EcgFill {
  values: Partial<Record<FillKey, number>>
  statements: string[]
  /** Set when the QTc kept is ours: we compute it by Bazett's formula. */
  qtcFormula?: 'bazett'
}

export function fillRows(data: EcgData): FillRow[] {
  const c = data.computed
  // Our QTc is Bazett's (the viewer says so, and gives Fridericia's beside it).
  const computed: Partial<Record<FillKey, number | null>> = {
    hr_bpm: c.heart_rate_bpm,
    rr_ms: c.rr_ms,
    qrs_ms: c.qrs_ms,
    qt_ms: c.qt_ms,
    qtc_ms: c.qtc_bazett_ms,
  }
  return FILL_KEYS.map((key) => ({ key, machine: machineValue(data.machine, key), computed: computed[key] ?? null }))
}

/** The machine's free-text statements ("SINUS RHYTHM"), in order, without repeats. */
export function machineStatements(data: EcgData): string[] {
  const out: string[] = []
  for (const m of data.machine) {
    const text = m.text.trim()
    if (text && m.value === null && !out.includes(text)) out.push(text)
  }
  return out
}

// -- which ECG -----------------------------------------------------------------------------------

/** The ECG open in the reading room, per consult: the report form fills from this one. */
export const openEcg = ref<{ consultId: string; ref: EcgSource; data: EcgData } | null>(null)

/** The ECG to fill a consult's report from: the one on screen, else the consult's first. */
export async function ecgForConsult(consultId: string): Promise<EcgData | null> {
  const open = openEcg.value
  if (open && open.consultId === consultId) return open.data
  for (const study of await consultStudies(consultId)) {
    for (const series of study.series) {
      if (series.kind === 'ecg' && series.first_instance_uid) {
        return getEcg({ study_uid: study.study_uid, series_uid: series.series_uid, instance_uid: series.first_instance_uid })
      }
    }
  }
  const [aecg] = await consultAecgs(consultId)
  return aecg ? getEcg({ attachment_id: aecg.id }) : null
}
