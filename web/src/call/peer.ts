// One side of a two-party video call: the camera and microphone, an RTCPeerConnection, and the
// signalling over the realtime channel (docs/events.md, "Video signalling"). The caller sends
// the offer once the invitee has answered; the callee answers it; ICE candidates trickle both
// ways (`null` ends them; aiortc sends none, its candidates are in its SDP). Media goes peer to
// peer; with no ICE servers (a LAN, the test machine) host candidates suffice.

import type { Socket } from 'socket.io-client'
import { connectRealtime } from '../realtime'
import { hangupCall, iceServers, reportConnected } from './api'

export type PeerStatus = 'starting' | 'waiting' | 'connecting' | 'connected' | 'ended' | 'failed'

interface Signal {
  call_id: string
  kind: 'offer' | 'answer' | 'ice' | 'hangup'
  from?: string
  sdp?: string
  candidate?: RTCIceCandidateInit | null
}

export interface PeerEvents {
  status: (status: PeerStatus) => void
  remoteStream: (stream: MediaStream) => void
  /** The other side hung up (a `hangup` signal). */
  remoteHangup: () => void
}

function isSignal(value: unknown): value is Signal {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return typeof v.call_id === 'string' && typeof v.kind === 'string'
}

async function emitChecked(socket: Socket, message: string, body: unknown): Promise<void> {
  const answer: unknown = await socket.timeout(10_000).emitWithAck(message, body)
  if (typeof answer === 'object' && answer !== null && 'error' in answer) {
    const error = (answer as { error: { code: string; message: string } }).error
    throw new Error(`${message}: ${error.code} ${error.message}`)
  }
}

export class CallPeer {
  readonly callId: string
  readonly caller: boolean
  pc: RTCPeerConnection | null = null
  localStream: MediaStream | null = null
  private socket: Socket | null = null
  private readonly events: PeerEvents
  private pending: (RTCIceCandidateInit | null)[] = []
  private remoteSet = false
  private offered = false
  private reported = false
  private closed = false

  constructor(callId: string, caller: boolean, events: PeerEvents) {
    this.callId = callId
    this.caller = caller
    this.events = events
  }

  /** Camera, peer connection, `call.join`. The callee then waits for the offer. */
  async start(): Promise<MediaStream> {
    this.events.status('starting')
    const [stream, servers] = await Promise.all([
      navigator.mediaDevices.getUserMedia({ video: true, audio: true }),
      iceServers(),
    ])
    if (this.closed) {
      stream.getTracks().forEach((track) => track.stop())
      throw new Error('call closed')
    }
    this.localStream = stream
    const pc = new RTCPeerConnection({ iceServers: servers })
    this.pc = pc
    for (const track of stream.getTracks()) pc.addTrack(track, stream)
    pc.addEventListener('icecandidate', (e) => {
      // An empty candidate string is Chrome's per-generation end marker: `null` covers it.
      if (e.candidate && !e.candidate.candidate) return
      this.send({ kind: 'ice', candidate: e.candidate ? e.candidate.toJSON() : null }).catch((error: unknown) =>
        console.warn('ICE candidate not relayed', error),
      )
    })
    pc.addEventListener('track', (e) => {
      const remote = e.streams[0] ?? new MediaStream([e.track])
      this.events.remoteStream(remote)
    })
    pc.addEventListener('iceconnectionstatechange', () => this.onIceState())
    const socket = connectRealtime()
    this.socket = socket
    socket.on('call.signal', this.onSignal)
    socket.on('connect', this.onReconnect)
    if (!socket.connected) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('realtime channel unavailable')), 15_000)
        socket.once('connect', () => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    await emitChecked(socket, 'call.join', { call_id: this.callId })
    this.events.status('waiting')
    return stream
  }

  /** The caller, once the invitee has answered. */
  async offer(): Promise<void> {
    const pc = this.pc
    if (!pc || this.offered || this.closed) return
    this.offered = true
    this.events.status('connecting')
    await pc.setLocalDescription(await pc.createOffer())
    await this.send({ kind: 'offer', sdp: pc.localDescription?.sdp ?? '' })
  }

  /** Hang up: tell the other side, leave the call on the server, release the camera. */
  async hangup(): Promise<void> {
    if (this.closed) return
    await this.send({ kind: 'hangup' }).catch(() => undefined)
    this.close()
    await hangupCall(this.callId)
  }

  /** Release everything (the call ended, or this page is going away). */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.socket) {
      this.socket.off('call.signal', this.onSignal)
      this.socket.off('connect', this.onReconnect)
      if (this.socket.connected) this.socket.emit('call.leave', { call_id: this.callId })
    }
    this.pc?.close()
    this.localStream?.getTracks().forEach((track) => track.stop())
    this.events.status('ended')
  }

  private async send(body: Omit<Signal, 'call_id'>): Promise<void> {
    if (!this.socket || this.closed) return
    await emitChecked(this.socket, 'call.signal', { call_id: this.callId, ...body })
  }

  private readonly onReconnect = (): void => {
    if (this.socket && !this.closed) void emitChecked(this.socket, 'call.join', { call_id: this.callId }).catch(console.warn)
  }

  private readonly onSignal = (value: unknown): void => {
    if (!isSignal(value) || value.call_id !== this.callId || this.closed) return
    void this.handle(value).catch((error: unknown) => {
      console.warn('call signal failed', error)
      this.events.status('failed')
    })
  }

  private async handle(signal: Signal): Promise<void> {
    const pc = this.pc
    if (!pc) return
    switch (signal.kind) {
      case 'offer':
        if (this.caller || !signal.sdp) return
        this.events.status('connecting')
        await pc.setRemoteDescription({ type: 'offer', sdp: signal.sdp })
        await this.drain()
        await pc.setLocalDescription(await pc.createAnswer())
        await this.send({ kind: 'answer', sdp: pc.localDescription?.sdp ?? '' })
        return
      case 'answer':
        if (!this.caller || !signal.sdp) return
        await pc.setRemoteDescription({ type: 'answer', sdp: signal.sdp })
        await this.drain()
        return
      case 'ice':
        if (signal.candidate === undefined) return
        if (!this.remoteSet) this.pending.push(signal.candidate)
        else await this.addCandidate(signal.candidate)
        return
      case 'hangup':
        this.events.remoteHangup()
        return
    }
  }

  private async drain(): Promise<void> {
    this.remoteSet = true
    const queued = this.pending
    this.pending = []
    for (const candidate of queued) await this.addCandidate(candidate)
  }

  private async addCandidate(candidate: RTCIceCandidateInit | null): Promise<void> {
    // `null` ends the candidates.
    await this.pc?.addIceCandidate(candidate ?? undefined)
  }

  private onIceState(): void {
    const state = this.pc?.iceConnectionState
    if (state === 'connected' || state === 'completed') {
      this.events.status('connected')
      if (!this.reported) {
        this.reported = true
        reportConnected(this.callId).catch((error: unknown) => console.warn('call connected report failed', error))
      }
    } else if (state === 'failed') {
      this.events.status('failed')
    }
  }
}
