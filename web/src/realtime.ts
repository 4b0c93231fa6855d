// Realtime channel (socket.io) for a later release: worklist updates, report routing, alerts.
// Nothing imports this module yet, and nothing connects: the server has no socket.io endpoint
// so far. When it does, call connectRealtime() after sign-in and disconnectRealtime() on
// sign-out. The session cookie authenticates the connection (same origin).

import { io, type Socket } from 'socket.io-client'

export type RealtimeStatus = 'idle' | 'connecting' | 'connected' | 'disconnected'

let socket: Socket | null = null

/** The shared socket, created on first use but not connected. */
export function realtimeSocket(): Socket {
  socket ??= io({
    path: '/socket.io/',
    autoConnect: false,
    withCredentials: true,
    transports: ['websocket', 'polling'],
    reconnectionDelay: 1000,
    reconnectionDelayMax: 15000,
  })
  return socket
}

export function connectRealtime(): Socket {
  const s = realtimeSocket()
  if (!s.connected) s.connect()
  return s
}

export function disconnectRealtime(): void {
  socket?.disconnect()
  socket = null
}

export function realtimeStatus(): RealtimeStatus {
  if (!socket) return 'idle'
  if (socket.connected) return 'connected'
  return socket.active ? 'connecting' : 'disconnected'
}
