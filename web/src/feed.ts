// The event feed (GET /api/v1/events): what happened to the consults this user follows.
//
// Two ways in. The start-up backlog is read over REST (paged, so a station that was offline for
// a day gets everything it missed, once, in order). Then the page joins the realtime channel
// (socket.io, same origin, the session cookie authenticates): it emits `sync {after}` with the
// last id it holds, the server replays what committed since and pushes the rest live. While the
// socket is live there is no polling. When the socket cannot connect, or drops, the browser
// polls as before: every 5 s while the page is visible, every 30 s while it is hidden, and at
// once when the window regains focus; on reconnect it syncs again from the last id it holds, so
// nothing in between is lost. Ids only grow: an id already held is ignored (a replay may overlap
// a live push). Each batch is handed to the listeners (pages refresh what they show) and then
// acknowledged on the server (`ack` on the socket, POST /events/ack when polling).

import { ref } from 'vue'
import type { Socket } from 'socket.io-client'
import { ApiError, NetworkError, api } from './api'
import { connectRealtime, disconnectRealtime } from './realtime'
import type { EventPage, FeedEvent } from './types'

export const VISIBLE_INTERVAL_MS = 5_000
export const HIDDEN_INTERVAL_MS = 30_000
const PAGE_SIZE = 200
/** Pages read in one poll; a longer backlog is read over the next polls. */
const MAX_PAGES = 5
/** Events pushed in a burst (a replay) are handed over as one batch. */
const PUSH_BATCH_MS = 50

export interface FeedBatch {
  events: FeedEvent[]
  /** The first batch after start-up: the backlog, not news (no pop-up notices). */
  initial: boolean
}

export type FeedListener = (batch: FeedBatch) => void

const listeners = new Set<FeedListener>()
/** False while the server cannot be reached: the header says so. */
export const feedOnline = ref(true)
/** True while events arrive over the realtime channel (no polling meanwhile). */
export const feedLive = ref(false)

let running = false
/** The last event id this page holds (null: none read yet; the server starts at the ack). */
let after: number | null = null
/** Still reading the backlog found at start-up (it may take several polls). */
let catchingUp = true
let timer: ReturnType<typeof setTimeout> | null = null
let inFlight: Promise<void> | null = null
let socket: Socket | null = null
let pushed: FeedEvent[] = []
let pushTimer: ReturnType<typeof setTimeout> | null = null

export function onFeed(listener: FeedListener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

function schedule(): void {
  if (timer !== null) clearTimeout(timer)
  timer = null
  if (!running || feedLive.value) return
  const delay = document.visibilityState === 'visible' ? VISIBLE_INTERVAL_MS : HIDDEN_INTERVAL_MS
  timer = setTimeout(() => void pollFeed(), delay)
}

/** Hand the events not yet held to the listeners; returns the highest id handed over. */
function deliver(events: FeedEvent[], initial: boolean): number | null {
  const fresh = events.filter((e) => after === null || e.id > after).sort((a, b) => a.id - b.id)
  if (fresh.length === 0) return null
  const last = fresh.reduce((m, e) => Math.max(m, e.id), 0)
  after = Math.max(after ?? 0, last)
  const batch: FeedBatch = { events: fresh, initial }
  for (const listener of [...listeners]) {
    try {
      listener(batch)
    } catch (error) {
      console.warn('feed listener failed', error)
    }
  }
  return last
}

async function readOnce(): Promise<void> {
  const events: FeedEvent[] = []
  const initial = catchingUp
  let cursor = after
  let more = false
  for (let page = 0; page < MAX_PAGES; page++) {
    const body = await api.get<EventPage>('/api/v1/events', { after: cursor ?? undefined, limit: PAGE_SIZE })
    if (!running) return
    events.push(...body.items)
    cursor = body.next_after
    more = body.more
    if (!more) break
  }
  feedOnline.value = true
  catchingUp = more
  deliver(events, initial)
  if (cursor !== null && (after === null || cursor > after)) after = cursor
  if (after !== null && after > 0) await api.post('/api/v1/events/ack', { up_to: after })
}

/** Poll now (on focus, or after an action of one's own), then carry on at the usual pace. */
export function pollFeed(): Promise<void> {
  if (!running || feedLive.value) return Promise.resolve()
  inFlight ??= readOnce()
    .catch((error: unknown) => {
      if (error instanceof NetworkError) feedOnline.value = false
      else if (!(error instanceof ApiError && error.status === 401)) console.warn('event feed failed', error)
    })
    .finally(() => {
      inFlight = null
      if (running && !catchingUp) joinRealtime()
      schedule()
    })
  return inFlight
}

// -- the realtime channel ---------------------------------------------------------------------

function isFeedEvent(value: unknown): value is FeedEvent {
  return typeof value === 'object' && value !== null && typeof (value as { id?: unknown }).id === 'number'
}

function flushPushed(): void {
  pushTimer = null
  const events = pushed
  pushed = []
  if (!running) return
  const last = deliver(events, false)
  if (last !== null && socket?.connected) socket.emit('ack', { up_to: last })
}

function onPushed(value: unknown): void {
  if (!isFeedEvent(value) || (after !== null && value.id <= after)) return
  pushed.push(value)
  pushTimer ??= setTimeout(flushPushed, PUSH_BATCH_MS)
}

function onConnect(): void {
  const s = socket
  if (!s) return
  // Wait for the answer before calling the channel live: until then, keep polling.
  s.timeout(15_000).emit('sync', { after: after ?? 0 }, (error: unknown, answer: unknown) => {
    if (!running || socket !== s || !s.connected) return
    if (error || typeof answer !== 'object' || answer === null || 'error' in answer) {
      console.warn('realtime sync failed', error ?? answer)
      return
    }
    feedLive.value = true
    feedOnline.value = true
    schedule() // stops the polling timer
  })
}

function onDisconnect(): void {
  if (!feedLive.value) return
  feedLive.value = false
  // Fall back to polling at once; the next `connect` syncs again from the last id held.
  void pollFeed()
}

function joinRealtime(): void {
  if (socket) return
  const s = connectRealtime()
  socket = s
  s.on('connect', onConnect)
  s.on('disconnect', onDisconnect)
  s.on('connect_error', onDisconnect)
  s.on('event', onPushed)
  if (s.connected) onConnect()
}

function leaveRealtime(): void {
  if (socket) {
    socket.off('connect', onConnect)
    socket.off('disconnect', onDisconnect)
    socket.off('connect_error', onDisconnect)
    socket.off('event', onPushed)
    disconnectRealtime()
  }
  socket = null
  feedLive.value = false
  if (pushTimer !== null) clearTimeout(pushTimer)
  pushTimer = null
  pushed = []
}

function onVisibility(): void {
  if (document.visibilityState === 'visible') void pollFeed()
  else schedule()
}

function onFocus(): void {
  void pollFeed()
}

export function startFeed(): void {
  if (running) return
  running = true
  after = null
  catchingUp = true
  feedOnline.value = true
  feedLive.value = false
  document.addEventListener('visibilitychange', onVisibility)
  window.addEventListener('focus', onFocus)
  void pollFeed()
}

export function stopFeed(): void {
  running = false
  if (timer !== null) clearTimeout(timer)
  timer = null
  leaveRealtime()
  document.removeEventListener('visibilitychange', onVisibility)
  window.removeEventListener('focus', onFocus)
}
