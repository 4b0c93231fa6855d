// Calls ringing for this user, from the feed's `call.ringing` events, until the call is answered,
// declined, ended or timed out. Kept for the session, so a ring heard on another page is still
// there when the consult page opens (the app's notice links to it).

import { reactive } from 'vue'
import { onFeed } from '../feed'

export interface Ring {
  callId: string
  consultId: string
  callerId: string
}

export const rings = reactive(new Map<string, Ring>())
let off: (() => void) | null = null

const OVER = new Set(['call.accepted', 'call.declined', 'call.ended', 'call.timed_out'])

export function ringFor(consultId: string): Ring | null {
  for (const ring of rings.values()) if (ring.consultId === consultId) return ring
  return null
}

export function dropRing(callId: string): void {
  rings.delete(callId)
}

export function startRings(): void {
  if (off) return
  off = onFeed(({ events, initial }) => {
    for (const e of events) {
      const callId = typeof e.payload.call_id === 'string' ? e.payload.call_id : null
      if (!callId || !e.consult_id) continue
      // The backlog's rings are old news: only their endings count.
      if (e.type === 'call.ringing' && !initial) {
        const callerId = typeof e.payload.caller_id === 'string' ? e.payload.caller_id : ''
        rings.set(callId, { callId, consultId: e.consult_id, callerId })
      } else if (OVER.has(e.type)) {
        rings.delete(callId)
      }
    }
  })
}

export function stopRings(): void {
  off?.()
  off = null
  rings.clear()
}
