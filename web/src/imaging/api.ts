// The consult's studies, DICOMweb (QIDO-RS, WADO-RS metadata and rendered frames) and the ECG API.
// DICOMweb is same-origin: the session cookie authenticates every GET, <img> ones included.

import { ApiError, NetworkError, api } from '../api'
import type { Attachment, Items, Problem } from '../types'
import { isAecg, type DicomJson, type EcgData, type EcgSource, type SeriesRef, type StudyBrief } from './types'

export const DICOMWEB = '/dicomweb'

const enc = encodeURIComponent

export function seriesPath(s: SeriesRef): string {
  return `${DICOMWEB}/studies/${enc(s.study_uid)}/series/${enc(s.series_uid)}`
}

export function instancePath(s: SeriesRef, instanceUid: string): string {
  return `${seriesPath(s)}/instances/${enc(instanceUid)}`
}

/** Frames are numbered from 1 (PS3.18). */
export function framePath(s: SeriesRef, instanceUid: string, frame: number): string {
  return `${instancePath(s, instanceUid)}/frames/${frame}`
}

export function thumbnailUrl(s: SeriesRef, instanceUid: string): string {
  return `${instancePath(s, instanceUid)}/thumbnail`
}

export interface Window {
  center: number
  width: number
}

/** A server-rendered JPEG of one frame, windowed if asked, no larger than `size` pixels square. */
export function renderedUrl(s: SeriesRef, instanceUid: string, frame: number, size: number, window?: Window | null): string {
  const params = new URLSearchParams({ viewport: `${size},${size}` })
  if (window) params.set('window', `${Math.round(window.center)},${Math.round(window.width)},linear`)
  return `${framePath(s, instanceUid, frame)}/rendered?${params.toString()}`
}

export async function consultStudies(consultId: string, signal?: AbortSignal): Promise<StudyBrief[]> {
  const page = await api.get<{ items: StudyBrief[] }>(`/api/v1/consults/${enc(consultId)}/studies`, undefined, signal)
  return page.items
}

async function dicomJson(path: string, signal?: AbortSignal): Promise<DicomJson[]> {
  let response: Response
  try {
    response = await fetch(path, { headers: { Accept: 'application/dicom+json' }, credentials: 'same-origin', signal })
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') throw error
    throw new NetworkError(error)
  }
  if (response.status === 204) return []
  if (!response.ok) {
    let problem: Problem | null = null
    if ((response.headers.get('Content-Type') ?? '').includes('json')) {
      problem = (await response.json().catch(() => null)) as Problem | null
    }
    throw new ApiError(response.status, problem, null)
  }
  return (await response.json()) as DicomJson[]
}

/** WADO-RS series metadata: one DICOM JSON data set per instance, bulk data by URI. */
export function seriesMetadata(s: SeriesRef, signal?: AbortSignal): Promise<DicomJson[]> {
  return dicomJson(`${seriesPath(s)}/metadata`, signal)
}

/** QIDO-RS instances of a series with what a plain image stack needs: number, frames, cine rate. */
export function seriesInstances(s: SeriesRef, signal?: AbortSignal): Promise<DicomJson[]> {
  const fields = [TAG.instanceNumber, TAG.numberOfFrames, TAG.windowCenter, TAG.windowWidth, TAG.cineRate, TAG.recommendedFrameRate, TAG.frameTime]
  return dicomJson(`${seriesPath(s)}/instances?${fields.map((f) => `includefield=${f}`).join('&')}`, signal)
}

/** A DICOM ECG instance, or an attached HL7 aECG: the server answers both alike. */
export function getEcg(ref: EcgSource, signal?: AbortSignal): Promise<EcgData> {
  if (isAecg(ref)) return api.get<EcgData>(`/api/v1/attachments/${enc(ref.attachment_id)}/ecg`, undefined, signal)
  return api.get<EcgData>(`/api/v1/ecg/${enc(ref.study_uid)}/${enc(ref.series_uid)}/${enc(ref.instance_uid)}`, undefined, signal)
}

/** The consult's attached HL7 aECG files (attachments of kind `aecg`), oldest first. */
export async function consultAecgs(consultId: string, signal?: AbortSignal): Promise<Attachment[]> {
  const page = await api.get<Items<Attachment>>(`/api/v1/consults/${enc(consultId)}/attachments`, undefined, signal)
  return page.items.filter((a) => a.kind === 'aecg')
}

// -- reading DICOM JSON ------------------------------------------------------------------------

export function first(ds: DicomJson, tag: string): unknown {
  return ds[tag]?.Value?.[0]
}

export function str(ds: DicomJson, tag: string): string {
  const v = first(ds, tag)
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : ''
}

export function num(ds: DicomJson, tag: string): number | null {
  const v = first(ds, tag)
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN
  return Number.isFinite(n) ? n : null
}

export const TAG = {
  sopInstanceUid: '00080018',
  instanceNumber: '00200013',
  numberOfFrames: '00280008',
  imagePosition: '00200032',
  windowCenter: '00281050',
  windowWidth: '00281051',
  cineRate: '00180040',
  recommendedFrameRate: '00082144',
  frameTime: '00181063',
} as const

export interface StackEntry {
  instanceUid: string
  frame: number
}

/**
 * The frames of a series in viewing order: instances by Instance Number (then by position along
 * the slice normal's z), each multi-frame instance expanded into its frames.
 */
export function stackOrder(instances: DicomJson[]): StackEntry[] {
  const sorted = [...instances].sort((a, b) => {
    const na = num(a, TAG.instanceNumber)
    const nb = num(b, TAG.instanceNumber)
    if (na !== null && nb !== null && na !== nb) return na - nb
    const za = ds3(a)
    const zb = ds3(b)
    if (za !== null && zb !== null && za !== zb) return za - zb
    return str(a, TAG.sopInstanceUid).localeCompare(str(b, TAG.sopInstanceUid))
  })
  const out: StackEntry[] = []
  for (const ds of sorted) {
    const uid = str(ds, TAG.sopInstanceUid)
    if (!uid) continue
    const frames = Math.max(1, num(ds, TAG.numberOfFrames) ?? 1)
    for (let f = 1; f <= frames; f++) out.push({ instanceUid: uid, frame: f })
  }
  return out
}

/** A series that is one multi-frame instance (an ultrasound or angiography loop, a cardiac cine). */
export function isCineLoop(instances: DicomJson[]): boolean {
  const [only] = instances
  return instances.length === 1 && only !== undefined && (num(only, TAG.numberOfFrames) ?? 1) > 1
}

/**
 * The rate, in frames per second, at which the series asks to be played: Cine Rate, else the
 * Recommended Display Frame Rate, else one frame per Frame Time. Null if none says.
 */
export function cineRate(instances: DicomJson[]): number | null {
  for (const ds of instances) {
    const rate = num(ds, TAG.cineRate) ?? num(ds, TAG.recommendedFrameRate)
    if (rate !== null && rate > 0) return rate
    const ms = num(ds, TAG.frameTime)
    if (ms !== null && ms > 0) return 1000 / ms
  }
  return null
}

/** The cine speed to start at: the series' own rate as whole frames per second within 1–`max`, else `fallback`. */
export function startingFps(instances: DicomJson[], fallback: number, max: number): number {
  const own = cineRate(instances)
  return own === null ? fallback : Math.max(1, Math.min(max, Math.round(own)))
}

/** The cine speeds offered: the usual ones and the one chosen, in order. */
export function fpsChoices(usual: readonly number[], chosen: number): number[] {
  return [...new Set([...usual, chosen])].sort((a, b) => a - b)
}

function ds3(ds: DicomJson): number | null {
  const v = ds[TAG.imagePosition]?.Value?.[2]
  return typeof v === 'number' ? v : null
}

/** The data set's own window (its first value), if any. */
export function defaultWindow(ds: DicomJson | undefined): Window | null {
  if (!ds) return null
  const center = num(ds, TAG.windowCenter)
  const width = num(ds, TAG.windowWidth)
  return center !== null && width !== null && width > 0 ? { center, width } : null
}
