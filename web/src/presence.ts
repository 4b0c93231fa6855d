// Who is connected to the realtime channel now (a hint for people: "the station is online",
// never a condition for delivery). Read once from GET /api/v1/presence, kept current by the
// socket's `presence` messages, and read again on every (re)connect, since messages sent while
// the socket was down are lost. An institution is online while any of its users is.

import { computed, reactive } from 'vue'
import type { Socket } from 'socket.io-client'
import { api } from './api'
import { realtimeSocket } from './realtime'

interface OnlineUser {
  user_id: string
  institution_id: string
}

interface PresenceChange extends OnlineUser {
  online: boolean
}

/** The server batches changes: one message carries every change of the last half second. */
interface PresenceMessage {
  changes: PresenceChange[]
}

/** Online user id → their institution id. */
const online = reactive(new Map<string, string>())
let socket: Socket | null = null
let generation = 0

const onlineInstitutions = computed(() => new Set(online.values()))

export function userOnline(userId: string | null | undefined): boolean {
  return !!userId && online.has(userId)
}

export function institutionOnline(institutionId: string | null | undefined): boolean {
  return !!institutionId && onlineInstitutions.value.has(institutionId)
}

/** Changes heard while a snapshot is on its way: newer than it, so applied again over it (else
 * a snapshot taken before someone left, answered after the live message, brings them back). */
const heardDuringReload = new Set<PresenceChange[]>()

async function reload(): Promise<void> {
  const mine = generation
  const heard: PresenceChange[] = []
  heardDuringReload.add(heard)
  try {
    const body = await api.get<{ items: OnlineUser[] }>('/api/v1/presence')
    if (mine !== generation) return
    online.clear()
    for (const u of body.items) online.set(u.user_id, u.institution_id)
    for (const change of heard) apply(change)
  } catch (error) {
    console.warn('presence failed', error)
  } finally {
    heardDuringReload.delete(heard)
  }
}

function apply(change: PresenceChange): void {
  if (change.online) online.set(change.user_id, change.institution_id)
  else online.delete(change.user_id)
}

function isChange(value: unknown): value is PresenceChange {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return typeof v.user_id === 'string' && typeof v.institution_id === 'string' && typeof v.online === 'boolean'
}

function isMessage(value: unknown): value is PresenceMessage {
  return typeof value === 'object' && value !== null && Array.isArray((value as PresenceMessage).changes)
}

function onPresence(value: unknown): void {
  if (!isMessage(value)) return
  for (const change of value.changes) {
    if (!isChange(change)) continue
    apply(change)
    for (const heard of heardDuringReload) heard.push(change)
  }
}

function onConnect(): void {
  void reload()
}

/** Once signed in, alongside the feed (which connects the shared socket). */
export function startPresence(): void {
  if (socket) return
  generation++
  socket = realtimeSocket()
  socket.on('presence', onPresence)
  socket.on('connect', onConnect)
  void reload()
}

export function stopPresence(): void {
  generation++
  socket?.off('presence', onPresence)
  socket?.off('connect', onConnect)
  socket = null
  online.clear()
}
