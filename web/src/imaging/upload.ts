// Resumable upload of one DICOM file over /api/v1/uploads: create, send 4 MiB chunks at the
// server's offset, and complete (the server ingests the file and links its study to the consult).
// A dropped connection is not a failure: wait, ask the server how much it holds, and go on from
// there. Only the bytes it lacks are sent again.

import { ApiError, NetworkError, api, uploadFile } from '../api'
import type { Attachment } from '../types'
import type { UploadResult, UploadState } from './types'

export const CHUNK_SIZE = 4 * 1024 * 1024
/** Network failures in a row before the upload pauses and waits for the user. */
const MAX_FAILURES = 8

export type UploadPhase = 'waiting' | 'checking' | 'uploading' | 'retrying' | 'finishing' | 'done' | 'failed' | 'cancelled'

export interface UploadHooks {
  /** Bytes the server holds (or is receiving in the current chunk). */
  onProgress(sent: number): void
  onPhase(phase: UploadPhase, retryInSeconds?: number): void
  /** The server's id for this upload, as soon as it exists (to resume it later). */
  onCreated(id: string): void
}

/** A DICOM Part-10 file: a 128-byte preamble, then "DICM". */
export async function looksLikeDicom(file: Blob): Promise<boolean> {
  if (file.size < 132) return false
  const bytes = new Uint8Array(await file.slice(128, 132).arrayBuffer())
  return bytes[0] === 0x44 && bytes[1] === 0x49 && bytes[2] === 0x43 && bytes[3] === 0x4d
}

function sleep(seconds: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException('aborted', 'AbortError'))
      return
    }
    const timer = window.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, seconds * 1000)
    const onAbort = () => {
      window.clearTimeout(timer)
      reject(new DOMException('aborted', 'AbortError'))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** A failure worth waiting out: no answer at all, or the server or a proxy briefly unavailable. */
function transient(error: unknown): boolean {
  return error instanceof NetworkError || (error instanceof ApiError && [502, 503, 504].includes(error.status))
}

function problemOffset(error: ApiError): number | null {
  const value = (error.problem as { offset?: unknown } | null)?.offset
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null
}

/**
 * Upload `file` for `consultId`, resuming the server's upload `resumeId` if given. Resolves with
 * what the server stored; rejects with ApiError (refused: not DICOM, too large, …), NetworkError
 * (the link kept failing) or an AbortError (cancelled).
 */
export async function uploadResumable(
  file: File,
  filename: string,
  consultId: string,
  hooks: UploadHooks,
  options: { resumeId?: string | null; signal?: AbortSignal } = {},
): Promise<UploadResult> {
  const { signal } = options
  const path = (id: string) => `/api/v1/uploads/${encodeURIComponent(id)}`
  let failures = 0

  /** Wait out a transient failure (longer each time), or give up after too many. */
  async function backOff(error: unknown): Promise<void> {
    failures++
    if (failures > MAX_FAILURES) throw error
    const seconds = Math.min(30, 2 ** (failures - 1))
    hooks.onPhase('retrying', seconds)
    await sleep(seconds, signal)
    hooks.onPhase('uploading')
  }

  hooks.onPhase('uploading')
  let id = options.resumeId ?? null
  let offset = 0
  for (;;) {
    try {
      if (id) {
        offset = (await api.get<UploadState>(path(id), undefined, signal)).offset
      } else {
        const created = await api.post<UploadState>('/api/v1/uploads', { size: file.size, filename, consult_id: consultId }, { signal })
        id = created.id
        offset = created.offset
        hooks.onCreated(id)
      }
      break
    } catch (error) {
      if (!transient(error)) throw error
      await backOff(error)
    }
  }
  hooks.onProgress(offset)

  while (offset < file.size) {
    const start = offset
    const chunk = file.slice(start, Math.min(file.size, start + CHUNK_SIZE))
    try {
      const answer = await uploadFile<{ offset: number }>(path(id), chunk, {
        method: 'PUT',
        query: { offset: start },
        signal,
        onProgress: (p) => hooks.onProgress(start + p.loaded),
      })
      offset = answer.offset
      failures = 0
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        // Not the offset the server holds (a chunk that arrived although its answer was lost).
        offset = problemOffset(error) ?? (await api.get<UploadState>(path(id), undefined, signal)).offset
        continue
      }
      if (!transient(error)) throw error
      await backOff(error)
      // Ask the server what it kept of the broken chunk; if it cannot answer yet, wait again.
      for (;;) {
        try {
          offset = (await api.get<UploadState>(path(id), undefined, signal)).offset
          break
        } catch (again) {
          if (!transient(again)) throw again
          await backOff(again)
        }
      }
    }
    hooks.onProgress(offset)
  }

  hooks.onPhase('finishing')
  for (;;) {
    try {
      const result = await api.post<UploadResult>(`${path(id)}/complete`, undefined, { signal })
      hooks.onPhase('done')
      return result
    } catch (error) {
      if (!transient(error)) throw error
      await backOff(error)
    }
  }
}

const CODES: Record<string, string> = {
  'not-dicom': 'notDicom',
  truncated: 'truncated',
  malformed: 'malformed',
  'missing-meta': 'missingMeta',
  'missing-uid': 'missingUid',
  'bad-uid': 'badUid',
  'inconsistent-meta': 'inconsistentMeta',
  empty: 'empty',
}

/** An HL7 aECG file goes to the consult's attachments (kind aecg), not the DICOM archive. */
export function looksLikeAecg(file: File): boolean {
  return /\.xml$/i.test(file.name) || /[/+]xml$/i.test(file.type)
}

/** Send an aECG file as an attachment of kind `aecg` (the server reads it before keeping it). */
export function uploadAecg(file: File, consultId: string, onProgress: (sent: number) => void, signal?: AbortSignal): Promise<Attachment> {
  return uploadFile<Attachment>(`/api/v1/consults/${encodeURIComponent(consultId)}/attachments`, file, {
    query: { filename: file.name, kind: 'aecg' },
    onProgress: (p) => onProgress(p.loaded),
    signal,
  })
}

const AECG_CODES = new Set([
  'too-large',
  'not-xml',
  'forbidden-xml',
  'not-aecg',
  'no-series',
  'no-leads',
  'bad-timing',
  'bad-scale',
  'bad-digits',
  'length-mismatch',
  'duplicate-lead',
])

function camel(code: string): string {
  return code.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
}

/** The full i18n key for a refused aECG upload (`aecg-<reason>` from the server), and the detail for "other". */
export function aecgErrorKey(error: unknown, zh: boolean): { key: string; detail: string } {
  if (error instanceof ApiError && (error.problem?.code ?? '').startsWith('aecg-')) {
    const code = (error.problem?.code ?? '').slice('aecg-'.length)
    if (AECG_CODES.has(code)) return { key: `imaging.aecg.errors.${camel(code)}`, detail: '' }
    const p = error.problem
    return { key: 'imaging.aecg.errors.other', detail: (zh && p?.title_zh) || p?.detail || p?.title || code }
  }
  const { key, detail } = uploadErrorKey(error, zh)
  return { key: `imaging.upload.errors.${key}`, detail }
}

/** The i18n key (under imaging.upload.errors) for a failed upload, and the detail for "other". */
export function uploadErrorKey(error: unknown, zh: boolean): { key: string; detail: string } {
  if (error instanceof NetworkError) return { key: 'network', detail: '' }
  if (error instanceof ApiError) {
    const code = (error.problem?.code ?? '').replace(/^dicom-/, '')
    const known = CODES[code]
    if (known) return { key: known, detail: '' }
    if (error.status === 413) return { key: 'tooLarge', detail: '' }
    const p = error.problem
    const detail = (zh && p?.title_zh) || p?.detail || p?.title || `HTTP ${error.status}`
    return { key: 'other', detail }
  }
  return { key: 'other', detail: error instanceof Error ? error.message : String(error) }
}
