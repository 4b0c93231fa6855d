// A video call: the camera and microphone, and one RTCPeerConnection per other participant (a
// browser mesh of up to four), signalled over the realtime channel (docs/events.md, "Video
// signalling"). `CallSession` owns what the pairs share (the camera, the socket, `call.join`)
// and routes each signal by its sender to that sender's `CallPeer`; ICE candidates trickle both
// ways (`null` ends them; aiortc sends none, its candidates are in its SDP).
//
// Who offers to whom: when an invitee answers (`call.accepted`), each member already in the call
// who is its senior (the caller; otherwise the one invited earlier) makes a `CallPeer` for it and
// offers; the newcomer makes its `CallPeer` when that offer arrives. Two-party calls are the same
// rule: the caller offers once the invitee has answered.
//
// Surviving bad networks, per pair:
// - ICE restart. When ICE goes `disconnected` (after a grace period) or `failed`, a side sends an
//   offer with `iceRestart` (after fetching fresh TURN credentials), and again with backoff until
//   the pair is back. Glare is settled by the "perfect negotiation" rule: the offering senior is
//   impolite (leads: restarts after 2 s and ignores a colliding offer), the other polite
//   (restarts only after 8 s, and yields to a colliding offer by rolling its own back).
// - The realtime channel coming back: the page re-joins the call's room, and each pair whose ICE
//   is not connected restarts it at once (also when it hears its other side re-join).
// - Media modes (mode.ts): full, low (≤180 lines at 15 fps, 150 kbit/s) and audio only, applied
//   to a pair's senders and told to its other side over a negotiated data channel, which applies
//   the same; chosen by the user (for every pair) or by the quality monitor (for its pair).
// - Side connections: a receive-only offer from a member (the server's recording participant)
//   gets its own RTCPeerConnection that sends our camera and microphone, and no tile.

import type { Socket } from 'socket.io-client'
import { connectRealtime } from '../realtime'
import { hangupCall, reportConnected, rtcConfiguration, type CallOut } from './api'
import { applyMode, type MediaMode, type ModeMessage, isModeMessage } from './mode'

export type PeerStatus = 'starting' | 'waiting' | 'connecting' | 'connected' | 'reconnecting' | 'ended' | 'failed'

export interface Signal {
  call_id: string
  kind: 'offer' | 'answer' | 'ice' | 'hangup' | 'joined'
  from?: string
  to?: string | null
  sdp?: string
  candidate?: RTCIceCandidateInit | null
}

export interface PeerEvents {
  status: (status: PeerStatus) => void
  remoteStream: (stream: MediaStream) => void
  /** The other side hung up (a `hangup` signal). */
  remoteHangup: () => void
  /** The pair's media mode changed, here (`remote` false) or on the other side. */
  mode?: (mode: MediaMode, remote: boolean, auto: boolean) => void
}

export interface SessionEvents {
  /** The session's own status before any pair exists (starting, waiting) and at the end. */
  status: (status: PeerStatus) => void
  /** A pair was made (its events are the ones `pairEvents` gave). */
  pair: (peer: CallPeer) => void
  /** A pair is gone (its member hung up). `last`: no pair remains. */
  pairGone: (peer: CallPeer, last: boolean) => void
  pairEvents: (remoteId: string) => PeerEvents
}

/** A negotiated data channel both sides open with the same id: no extra signalling. */
const CONTROL_CHANNEL_ID = 100
/** ICE restart: first attempt after this long `disconnected` (impolite / polite side), ms. */
const RESTART_GRACE = { impolite: 2_000, polite: 8_000 }
const RESTART_BACKOFF_MAX = 10_000

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

/** An offer that sends nothing (every media section `recvonly`): the recorder's. */
function receiveOnly(sdp: string): boolean {
  return !/^a=(sendrecv|sendonly)\s*$/m.test(sdp)
}

/** Does `mine` offer to `other`? The caller does; otherwise the one invited earlier (then the
 * lower user id). */
export function senior(call: CallOut, mine: string, other: string): boolean {
  if (mine === call.created_by_user_id) return true
  if (other === call.created_by_user_id) return false
  const a = call.participants.find((p) => p.user_id === mine)
  const b = call.participants.find((p) => p.user_id === other)
  if (!a || !b) return false
  if (a.invited_at !== b.invited_at) return a.invited_at < b.invited_at
  return mine < other
}

type Send = (body: Omit<Signal, 'call_id'>, to: string | null) => Promise<void>

/** What the pairs of a session share. */
interface Shared {
  callId: string
  send: Send
  localStream: MediaStream
  config: () => RTCConfiguration
  refreshConfig: () => Promise<RTCConfiguration>
}

/** The whole call as this page holds it: camera, socket, the pairs and the side connections. */
export class CallSession {
  readonly callId: string
  readonly caller: boolean
  localStream: MediaStream | null = null
  readonly pairs = new Map<string, CallPeer>()
  private config: RTCConfiguration = {}
  private socket: Socket | null = null
  private readonly events: SessionEvents
  private closed = false
  /** Signals are handled one at a time, in order: a candidate never overtakes its offer. */
  private queue: Promise<void> = Promise.resolve()
  private readonly sides = new Map<string, RTCPeerConnection>()
  /** The mode the user chose for every pair (a new pair starts in it). */
  mode: MediaMode = 'full'

  constructor(callId: string, caller: boolean, events: SessionEvents) {
    this.callId = callId
    this.caller = caller
    this.events = events
  }

  /** Camera, socket, `call.join`. Then pairs come: offered to (`offerTo`) or offered by. */
  async start(): Promise<MediaStream> {
    this.events.status('starting')
    const [stream, config] = await Promise.all([
      navigator.mediaDevices.getUserMedia({ video: true, audio: true }),
      rtcConfiguration(),
    ])
    if (this.closed) {
      stream.getTracks().forEach((track) => track.stop())
      throw new Error('call closed')
    }
    this.localStream = stream
    this.config = config
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
    if (this.pairs.size === 0) this.events.status('waiting')
    return stream
  }

  get started(): boolean {
    return this.localStream !== null && !this.closed
  }

  /** Make a pair with a member who answered, and send it our offer (we are its senior). */
  async offerTo(remoteId: string): Promise<void> {
    if (!this.started || this.pairs.has(remoteId) || this.sides.has(remoteId)) return
    const pair = this.makePair(remoteId, false)
    await pair.offer()
  }

  /** Switch the media mode of every pair here and tell each other side, which does the same. */
  async setMode(mode: MediaMode, auto = false): Promise<void> {
    if (this.closed) return
    this.mode = mode
    await Promise.all([...this.pairs.values()].map((p) => p.setMode(mode, auto)))
    const senders = [...this.sides.values()].flatMap((pc) => pc.getSenders())
    await Promise.all(senders.map((sender) => applyMode(sender, mode)))
  }

  /** Hang up: tell the others, leave the call on the server, release the camera. */
  async hangup(): Promise<void> {
    if (this.closed) return
    await this.send({ kind: 'hangup' }, null).catch(() => undefined)
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
    for (const pair of this.pairs.values()) pair.close()
    this.pairs.clear()
    for (const side of this.sides.values()) side.close()
    this.sides.clear()
    this.localStream?.getTracks().forEach((track) => track.stop())
    this.events.status('ended')
  }

  private makePair(remoteId: string, polite: boolean): CallPeer {
    const shared: Shared = {
      callId: this.callId,
      send: this.send,
      localStream: this.localStream!,
      config: () => this.config,
      refreshConfig: async () => {
        this.config = await rtcConfiguration()
        return this.config
      },
    }
    const pair = new CallPeer(shared, remoteId, polite, this.events.pairEvents(remoteId))
    this.pairs.set(remoteId, pair)
    if (this.mode !== 'full') void pair.setMode(this.mode, false).catch(() => undefined)
    this.events.pair(pair)
    return pair
  }

  private readonly send: Send = async (body, to) => {
    if (!this.socket || this.closed) return
    await emitChecked(this.socket, 'call.signal', { call_id: this.callId, ...body, to })
  }

  private readonly onReconnect = (): void => {
    if (!this.socket || this.closed) return
    void emitChecked(this.socket, 'call.join', { call_id: this.callId })
      .then(() => {
        // Back in the room: anything sent while we were away is lost; restart what is down.
        for (const pair of this.pairs.values()) pair.rejoined()
      })
      .catch(console.warn)
  }

  private readonly onSignal = (value: unknown): void => {
    if (!isSignal(value) || value.call_id !== this.callId || this.closed) return
    this.queue = this.queue
      .then(() => this.route(value))
      .catch((error: unknown) => console.warn('call signal failed', error))
  }

  private async route(signal: Signal): Promise<void> {
    if (this.closed || !this.localStream) return
    const from = signal.from
    if (!from) return
    if (this.sides.has(from)) return this.handleSide(from, signal)
    let pair = this.pairs.get(from)
    if (!pair && signal.kind === 'offer' && signal.sdp) {
      if (receiveOnly(signal.sdp)) return this.handleSide(from, signal)
      pair = this.makePair(from, true) // it offered first: its senior
    }
    if (!pair) return
    if (signal.kind === 'hangup') {
      pair.close()
      this.pairs.delete(from)
      this.events.pairGone(pair, this.pairs.size === 0)
      return
    }
    await pair.handle(signal)
  }

  // -- side connections (a member that only receives: the recorder) ---------------------------

  private async handleSide(from: string, signal: Signal): Promise<void> {
    let side = this.sides.get(from)
    if (signal.kind === 'hangup') {
      side?.close()
      this.sides.delete(from)
      return
    }
    if (signal.kind === 'offer' && signal.sdp) {
      if (!side) {
        side = new RTCPeerConnection(this.config)
        this.sides.set(from, side)
        for (const track of this.localStream?.getTracks() ?? []) side.addTrack(track, this.localStream!)
        side.addEventListener('icecandidate', (e) => {
          if (e.candidate && !e.candidate.candidate) return
          this.send({ kind: 'ice', candidate: e.candidate ? e.candidate.toJSON() : null }, from).catch(() => undefined)
        })
      }
      await side.setRemoteDescription({ type: 'offer', sdp: signal.sdp })
      await side.setLocalDescription(await side.createAnswer())
      await Promise.all(side.getSenders().map((sender) => applyMode(sender, this.mode)))
      await this.send({ kind: 'answer', sdp: side.localDescription?.sdp ?? '' }, from)
      return
    }
    if (signal.kind === 'ice' && side && signal.candidate !== undefined) {
      await side.addIceCandidate(signal.candidate ?? undefined).catch(() => undefined)
    }
  }
}

/** One pair of the mesh: our RTCPeerConnection with one other member, perfect negotiation, ICE
 * restart and the media mode of this pair. */
export class CallPeer {
  readonly callId: string
  readonly remoteId: string
  /** Perfect negotiation: the one who did not make the first offer yields when offers collide. */
  readonly polite: boolean
  readonly pc: RTCPeerConnection
  mode: MediaMode = 'full'
  /** ICE restarts sent so far (shown in the test hook). */
  restarts = 0
  status: PeerStatus = 'connecting'
  private readonly shared: Shared
  private readonly control: RTCDataChannel
  private readonly events: PeerEvents
  private pending: (RTCIceCandidateInit | null)[] = []
  private remoteSet = false
  private offered = false
  private reported = false
  private closed = false
  private makingOffer = false
  private ignoreOffer = false
  private restartTimer: ReturnType<typeof setTimeout> | null = null
  private backoff = 0

  constructor(shared: Shared, remoteId: string, polite: boolean, events: PeerEvents) {
    this.shared = shared
    this.callId = shared.callId
    this.remoteId = remoteId
    this.polite = polite
    this.events = events
    const stream = shared.localStream
    const pc = new RTCPeerConnection(shared.config())
    this.pc = pc
    for (const track of stream.getTracks()) pc.addTrack(track, stream)
    this.control = pc.createDataChannel('control', { negotiated: true, id: CONTROL_CHANNEL_ID })
    this.control.addEventListener('message', (e) => this.onControl(e.data))
    this.control.addEventListener('open', () => {
      // Tell a late channel what we already chose.
      if (this.mode !== 'full') this.tell({ type: 'mode', mode: this.mode, auto: false })
    })
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
  }

  /** The senior side's first offer. */
  async offer(): Promise<void> {
    if (this.offered || this.closed) return
    this.offered = true
    this.setStatus('connecting')
    await this.makeOffer(false)
  }

  /** Switch this pair's media mode and tell the other side, which does the same. */
  async setMode(mode: MediaMode, auto = false): Promise<void> {
    if (this.closed) return
    await this.applyLocalMode(mode)
    this.events.mode?.(mode, false, auto)
    this.tell({ type: 'mode', mode, auto })
  }

  /** Our socket came back and re-joined the call: restart if our media is down. */
  rejoined(): void {
    if (!this.iceUp()) this.scheduleRestart(0)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
    this.pc.close()
    this.setStatus('ended')
  }

  // -- signalling -------------------------------------------------------------------------------

  private send(body: Omit<Signal, 'call_id'>): Promise<void> {
    if (this.closed) return Promise.resolve()
    return this.shared.send(body, this.remoteId)
  }

  async handle(signal: Signal): Promise<void> {
    const pc = this.pc
    if (this.closed) return
    switch (signal.kind) {
      case 'offer': {
        if (!signal.sdp) return
        const collision = this.makingOffer || pc.signalingState !== 'stable'
        this.ignoreOffer = !this.polite && collision
        if (this.ignoreOffer) return
        if (this.status !== 'reconnecting') this.setStatus('connecting')
        await pc.setRemoteDescription({ type: 'offer', sdp: signal.sdp }) // rolls ours back
        await this.drain()
        await pc.setLocalDescription(await pc.createAnswer())
        await this.send({ kind: 'answer', sdp: pc.localDescription?.sdp ?? '' })
        return
      }
      case 'answer':
        if (!signal.sdp || pc.signalingState !== 'have-local-offer') return
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
      case 'joined':
        // The other side (re-)joined the room: if our media is down, it can hear a restart now.
        if (this.remoteSet && !this.iceUp()) this.scheduleRestart(0)
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
    try {
      // `null` ends the candidates.
      await this.pc.addIceCandidate(candidate ?? undefined)
    } catch (error) {
      // Candidates of an offer we ignored (glare), or of a generation a restart replaced.
      if (!this.ignoreOffer) console.warn('ICE candidate refused', error)
    }
  }

  private async makeOffer(iceRestart: boolean): Promise<void> {
    const pc = this.pc
    if (this.closed) return
    this.makingOffer = true
    try {
      await pc.setLocalDescription(await pc.createOffer({ iceRestart }))
      await this.send({ kind: 'offer', sdp: pc.localDescription?.sdp ?? '' })
    } finally {
      this.makingOffer = false
    }
  }

  // -- reconnection -----------------------------------------------------------------------------

  private setStatus(status: PeerStatus): void {
    this.status = status
    this.events.status(status)
  }

  private iceUp(): boolean {
    const state = this.pc.iceConnectionState
    return state === 'connected' || state === 'completed'
  }

  private onIceState(): void {
    if (this.closed) return
    const state = this.pc.iceConnectionState
    if (state === 'connected' || state === 'completed') {
      this.backoff = 0
      if (this.restartTimer) clearTimeout(this.restartTimer)
      this.restartTimer = null
      this.setStatus('connected')
      if (!this.reported) {
        this.reported = true
        reportConnected(this.callId).catch((error: unknown) => console.warn('call connected report failed', error))
      }
    } else if ((state === 'disconnected' || state === 'failed') && this.remoteSet) {
      this.setStatus('reconnecting')
      const grace = this.polite ? RESTART_GRACE.polite : RESTART_GRACE.impolite
      this.scheduleRestart(state === 'failed' && !this.polite ? 0 : grace)
    } else if (state === 'failed') {
      this.setStatus('failed')
    }
  }

  private scheduleRestart(delay: number): void {
    if (this.closed) return
    if (this.restartTimer) clearTimeout(this.restartTimer)
    this.restartTimer = setTimeout(() => void this.restart(), delay)
  }

  /** An ICE restart with fresh TURN credentials; tried again with backoff until ICE is up. */
  private async restart(): Promise<void> {
    this.restartTimer = null
    const pc = this.pc
    if (this.closed || this.iceUp()) return
    this.setStatus('reconnecting')
    this.backoff = Math.min(this.backoff ? this.backoff * 2 : 2_000, RESTART_BACKOFF_MAX)
    this.scheduleRestart(this.backoff + (this.polite ? RESTART_GRACE.polite : 0))
    try {
      pc.setConfiguration(await this.shared.refreshConfig())
    } catch (error) {
      console.warn('ICE servers not refreshed; restarting with the old ones', error)
    }
    if (this.closed || this.iceUp()) return
    this.restarts += 1
    await this.makeOffer(true).catch((error: unknown) => console.warn('ICE restart offer not sent', error))
  }

  // -- media modes ------------------------------------------------------------------------------

  private async applyLocalMode(mode: MediaMode): Promise<void> {
    this.mode = mode
    await Promise.all(this.pc.getSenders().map((sender) => applyMode(sender, mode)))
  }

  private tell(message: ModeMessage): void {
    if (this.control.readyState === 'open') this.control.send(JSON.stringify(message))
  }

  private onControl(data: unknown): void {
    let message: unknown
    try {
      message = typeof data === 'string' ? JSON.parse(data) : null
    } catch {
      return
    }
    if (!isModeMessage(message) || message.mode === this.mode) return
    void this.applyLocalMode(message.mode).then(() => this.events.mode?.(message.mode, true, message.auto))
  }
}
