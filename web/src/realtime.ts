// Realtime channel (socket.io): the event feed (feed.ts) and presence ride on it. The session
// cookie authenticates the connection (same origin). connectRealtime() once signed in,
// disconnectRealtime() on sign-out.

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
    // Back within seconds after a dropped link (a video call waits on it to re-join); the
    // default ±50% jitter spreads a whole county's reconnects after a server restart.
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
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
