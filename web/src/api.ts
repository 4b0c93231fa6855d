// The one way the browser talks to the server: same-origin fetch with the session cookie,
// the CSRF header on every non-GET, and problem+json turned into ApiError.

import type { Problem } from './types'

export class ApiError extends Error {
  readonly status: number
  readonly problem: Problem | null
  /** Seconds to wait, from the problem body or the Retry-After header (429). */
  readonly retryAfter: number | null

  constructor(status: number, problem: Problem | null, retryAfter: number | null) {
    super(problem?.title ?? `HTTP ${status}`)
    this.name = 'ApiError'
    this.status = status
    this.problem = problem
    this.retryAfter = retryAfter
  }
}

/** The network failed (server down, connection dropped): no HTTP answer at all. */
export class NetworkError extends Error {
  constructor(cause: unknown) {
    super('network error', { cause })
    this.name = 'NetworkError'
  }
}

const CSRF_COOKIE = 'huizhen_csrf'
let csrfFromLogin: string | null = null
let onUnauthorized: (() => void) | null = null

export function rememberCsrf(token: string | null): void {
  csrfFromLogin = token
}

/** Called on a 401 from any request that was made with a session (not the sign-in itself). */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler
}

function csrfToken(): string | null {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=')
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join('='))
  }
  return csrfFromLogin
}

export type Query = Record<string, string | number | boolean | null | undefined>

export interface RequestOptions {
  query?: Query
  body?: unknown
  /** Do not treat a 401 as an expired session (sign-in, session restore). */
  anonymous?: boolean
  signal?: AbortSignal
}

function withQuery(path: string, query?: Query): string {
  if (!query) return path
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value))
  }
  const text = params.toString()
  return text ? `${path}?${text}` : path
}

async function readProblem(response: Response): Promise<Problem | null> {
  const type = response.headers.get('Content-Type') ?? ''
  if (!type.includes('json')) return null
  try {
    return (await response.json()) as Problem
  } catch {
    return null
  }
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (method !== 'GET' && method !== 'HEAD') {
    const token = csrfToken()
    if (token) headers['X-CSRF-Token'] = token
  }
  let body: string | undefined
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(options.body)
  }
  let response: Response
  try {
    response = await fetch(withQuery(path, options.query), {
      method,
      headers,
      body,
      credentials: 'same-origin',
      signal: options.signal,
    })
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') throw error
    throw new NetworkError(error)
  }
  if (!response.ok) {
    const problem = await readProblem(response)
    const header = Number(response.headers.get('Retry-After'))
    const retryAfter = problem?.retry_after ?? (Number.isFinite(header) && header > 0 ? header : null)
    // A 401 about the session (expired, signed out elsewhere) ends it here too; a 401 about
    // credentials just typed (wrong current password) is the form's business.
    if (response.status === 401 && !options.anonymous && problem?.code !== 'invalid-credentials') {
      onUnauthorized?.()
    }
    throw new ApiError(response.status, problem, retryAfter)
  }
  if (response.status === 204) return undefined as T
  return (await response.json()) as T
}

function problemFromText(text: string, contentType: string): Problem | null {
  if (!contentType.includes('json')) return null
  try {
    return JSON.parse(text) as Problem
  } catch {
    return null
  }
}

export interface UploadProgress {
  loaded: number
  total: number
}

export interface UploadOptions {
  /** POST by default; PUT for a chunk of a resumable upload. */
  method?: 'POST' | 'PUT'
  query?: Query
  onProgress?: (progress: UploadProgress) => void
  signal?: AbortSignal
}

/**
 * Send a file as the raw request body, with its own Content-Type, reporting upload progress
 * (fetch cannot report it on HTTP/1.1, so this one request goes by XMLHttpRequest). Same
 * rules as `request`: cookie session, CSRF header, problem+json → ApiError, 401 ends the
 * session, no answer at all → NetworkError; aborting rejects with an AbortError.
 */
export function uploadFile<T>(path: string, file: Blob, options: UploadOptions = {}): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open(options.method ?? 'POST', withQuery(path, options.query))
    xhr.withCredentials = true
    xhr.setRequestHeader('Accept', 'application/json')
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream')
    const token = csrfToken()
    if (token) xhr.setRequestHeader('X-CSRF-Token', token)
    xhr.upload.onprogress = (event) => {
      options.onProgress?.({ loaded: event.loaded, total: event.lengthComputable ? event.total : file.size })
    }
    const onAbort = () => xhr.abort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const done = () => options.signal?.removeEventListener('abort', onAbort)
    xhr.onabort = () => {
      done()
      reject(new DOMException('upload aborted', 'AbortError'))
    }
    xhr.onerror = () => {
      done()
      reject(new NetworkError(new Error('upload failed')))
    }
    xhr.onload = () => {
      done()
      const contentType = xhr.getResponseHeader('Content-Type') ?? ''
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText) as T)
        } catch (error) {
          reject(error)
        }
        return
      }
      const problem = problemFromText(xhr.responseText, contentType)
      if (xhr.status === 401 && problem?.code !== 'invalid-credentials') onUnauthorized?.()
      const header = Number(xhr.getResponseHeader('Retry-After'))
      reject(new ApiError(xhr.status, problem, problem?.retry_after ?? (Number.isFinite(header) && header > 0 ? header : null)))
    }
    if (options.signal?.aborted) {
      done()
      reject(new DOMException('upload aborted', 'AbortError'))
      return
    }
    xhr.send(file)
  })
}

export interface Download {
  blob: Blob
  /** The type the file was uploaded with (the server sends every file as a download). */
  contentType: string
}

/** Fetch a file the server serves as a download; the blob carries the original type. */
export async function downloadFile(path: string, signal?: AbortSignal): Promise<Download> {
  let response: Response
  try {
    response = await fetch(path, { credentials: 'same-origin', signal })
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') throw error
    throw new NetworkError(error)
  }
  if (!response.ok) {
    const problem = await readProblem(response)
    if (response.status === 401) onUnauthorized?.()
    throw new ApiError(response.status, problem, null)
  }
  const contentType =
    response.headers.get('X-Original-Content-Type') || response.headers.get('Content-Type') || 'application/octet-stream'
  const body = await response.blob()
  return { blob: new Blob([body], { type: contentType }), contentType }
}

export const api = {
  get: <T>(path: string, query?: Query, signal?: AbortSignal) => request<T>('GET', path, { query, signal }),
  post: <T>(path: string, body?: unknown, options: Omit<RequestOptions, 'body'> = {}) =>
    request<T>('POST', path, { ...options, body }),
  patch: <T>(path: string, body?: unknown, options: Omit<RequestOptions, 'body'> = {}) =>
    request<T>('PATCH', path, { ...options, body }),
}
