// The event feed (GET /api/v1/events): what happened to the consults this user follows.
// There is no push channel yet, so the browser polls: every 5 s while the page is visible,
// every 30 s while it is hidden (a station in the background still learns of a critical
// report), and at once when the window regains focus. Each batch is handed to the listeners
// (pages refresh what they show) and then acknowledged on the server, so a station that was
// offline gets what it missed, once, on its next poll.

import { ref } from 'vue'
import { ApiError, NetworkError, api } from './api'
import type { EventPage, FeedEvent } from './types'

export const VISIBLE_INTERVAL_MS = 5_000
export const HIDDEN_INTERVAL_MS = 30_000
const PAGE_SIZE = 200
/** Pages read in one poll; a longer backlog is read over the next polls. */
const MAX_PAGES = 5

export interface FeedBatch {
  events: FeedEvent[]
  /** The first batch after start-up: the backlog, not news (no pop-up notices). */
  initial: boolean
}

export type FeedListener = (batch: FeedBatch) => void

const listeners = new Set<FeedListener>()
/** False while the server cannot be reached: the header says so. */
export const feedOnline = ref(true)

let running = false
let after: number | null = null
/** Still reading the backlog found at start-up (it may take several polls). */
let catchingUp = true
let timer: ReturnType<typeof setTimeout> | null = null
let inFlight: Promise<void> | null = null

export function onFeed(listener: FeedListener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

function schedule(): void {
  if (timer !== null) clearTimeout(timer)
  timer = null
  if (!running) return
  const delay = document.visibilityState === 'visible' ? VISIBLE_INTERVAL_MS : HIDDEN_INTERVAL_MS
  timer = setTimeout(() => void pollFeed(), delay)
}

async function readOnce(): Promise<void> {
  const events: FeedEvent[] = []
  const initial = catchingUp
  let more = false
  for (let page = 0; page < MAX_PAGES; page++) {
    const body = await api.get<EventPage>('/api/v1/events', { after: after ?? undefined, limit: PAGE_SIZE })
    if (!running) return
    events.push(...body.items)
    after = body.next_after
    more = body.more
    if (!more) break
  }
  feedOnline.value = true
  catchingUp = more
  if (events.length === 0) return
  const batch: FeedBatch = { events, initial }
  for (const listener of [...listeners]) {
    try {
      listener(batch)
    } catch (error) {
      console.warn('feed listener failed', error)
    }
  }
  if (after !== null && after > 0) await api.post('/api/v1/events/ack', { up_to: after })
}

/** Poll now (on focus, or after an action of one's own), then carry on at the usual pace. */
export function pollFeed(): Promise<void> {
  if (!running) return Promise.resolve()
  inFlight ??= readOnce()
    .catch((error: unknown) => {
      if (error instanceof NetworkError) feedOnline.value = false
      else if (!(error instanceof ApiError && error.status === 401)) console.warn('event feed failed', error)
    })
    .finally(() => {
      inFlight = null
      schedule()
    })
  return inFlight
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
  document.addEventListener('visibilitychange', onVisibility)
  window.addEventListener('focus', onFocus)
  void pollFeed()
}

export function stopFeed(): void {
  running = false
  if (timer !== null) clearTimeout(timer)
  timer = null
  document.removeEventListener('visibilitychange', onVisibility)
  window.removeEventListener('focus', onFocus)
}
