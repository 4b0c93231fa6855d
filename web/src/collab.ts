// Working a consult together: the message thread between the station and the centre, and the
// files either side attaches (photos, documents, anything else).

import { computed, reactive, type ComputedRef } from 'vue'
import { api, downloadFile, uploadFile, type UploadProgress } from './api'
import { i18n } from './i18n'
import { rememberName } from './people'
import type { Attachment, AttachmentKind, Items, Message } from './types'

const enc = encodeURIComponent

/** The server's limit (HUIZHEN_MAX_ATTACHMENT_BYTES by default): refused before sending. */
export const MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
export const MESSAGE_MAX = 4000

export async function listMessages(consultId: string): Promise<Message[]> {
  const body = await api.get<Items<Message>>(`/api/v1/consults/${enc(consultId)}/messages`)
  for (const m of body.items) rememberName(m.author_user_id, m.author_name)
  return body.items
}

export async function postMessage(consultId: string, text: string, attachmentIds: string[] = []): Promise<Message> {
  const message = await api.post<Message>(`/api/v1/consults/${enc(consultId)}/messages`, {
    body: text,
    attachment_ids: attachmentIds,
  })
  rememberName(message.author_user_id, message.author_name)
  return message
}

export async function listAttachments(consultId: string): Promise<Attachment[]> {
  return (await api.get<Items<Attachment>>(`/api/v1/consults/${enc(consultId)}/attachments`)).items
}

// The files of the consults on screen, shared by the file list and the message thread (which
// names the files a message carries and offers one's own files to send with a message).
const files = reactive(new Map<string, Attachment[]>())

export function consultFiles(consultId: () => string): ComputedRef<Attachment[] | null> {
  return computed(() => files.get(consultId()) ?? null)
}

export async function refreshFiles(consultId: string): Promise<void> {
  files.set(consultId, await listAttachments(consultId))
}

export function addFile(attachment: Attachment): void {
  const list = files.get(attachment.consult_id) ?? []
  if (!list.some((a) => a.id === attachment.id)) files.set(attachment.consult_id, [...list, attachment])
}

export function forgetFiles(consultId: string): void {
  files.delete(consultId)
}

export function uploadAttachment(
  consultId: string,
  file: File,
  kind: AttachmentKind,
  onProgress: (progress: UploadProgress) => void,
  signal?: AbortSignal,
): Promise<Attachment> {
  return uploadFile<Attachment>(`/api/v1/consults/${enc(consultId)}/attachments`, file, {
    query: { filename: file.name, kind },
    onProgress,
    signal,
  })
}

export function fetchAttachment(id: string, signal?: AbortSignal) {
  return downloadFile(`/api/v1/attachments/${enc(id)}`, signal)
}

/** A photo as the server's JPEG preview, fitted in `size` pixels: TIFF and 16-bit pictures
 * become viewable, and a 20 MB original never crosses a slow link just to be looked at. */
export function fetchPreview(id: string, size = 1600, signal?: AbortSignal) {
  return downloadFile(`/api/v1/attachments/${enc(id)}/preview?size=${size}`, signal)
}

/** A photo, a document or another file, from its type and name. */
export function kindOf(file: { type: string; name: string }): AttachmentKind {
  const type = file.type.toLowerCase()
  if (type.startsWith('image/')) return 'photo'
  if (
    type === 'application/pdf' ||
    type.startsWith('text/') ||
    type.includes('word') ||
    type.includes('officedocument') ||
    /\.(pdf|docx?|txt|rtf|odt)$/i.test(file.name)
  ) {
    return 'document'
  }
  return 'file'
}

/**
 * Types shown as a picture: raster formats the server turns into a JPEG preview. Anything that
 * could carry script (SVG, HTML) is only ever downloaded.
 */
const PREVIEWABLE = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp', 'image/tiff'])

export function previewable(contentType: string): boolean {
  return PREVIEWABLE.has(contentType.toLowerCase())
}

/** 512 B, 3.4 KB, 12.0 MB. */
export function formatSize(bytes: number): string {
  const t = i18n.global.t
  if (bytes < 1024) return t('files.bytes', { n: bytes })
  if (bytes < 1024 * 1024) return t('files.kb', { n: (bytes / 1024).toFixed(1) })
  return t('files.mb', { n: (bytes / (1024 * 1024)).toFixed(1) })
}

/** Save a blob under a file name through a temporary link. */
export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob)
  const link = document.createElement('a')
  link.href = url
  link.download = filename
  link.rel = 'noopener'
  document.body.appendChild(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
