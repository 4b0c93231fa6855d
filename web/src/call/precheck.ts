// The pre-call check's probes: the microphone's level, and whether the configured TURN server
// gives us a relayed candidate (a peer connection with iceTransportPolicy "relay" that only
// gathers: no one is called). Used by views/PreCallView.vue.

import { rtcConfiguration } from './api'

/** Peak level 0…1 above which the microphone counts as hearing something. */
export const MIC_THRESHOLD = 0.02
export const TURN_TIMEOUT_MS = 10_000

export type TurnResult =
  | { ok: true; relay: string }
  | { ok: false; reason: 'not-configured' | 'auth' | 'unreachable'; detail: string }

/** The microphone's level, 0…1 (RMS of the waveform), reported every animation frame. */
export function meterLevel(stream: MediaStream, onLevel: (level: number) => void): () => void {
  const context = new AudioContext()
  const source = context.createMediaStreamSource(stream)
  const analyser = context.createAnalyser()
  analyser.fftSize = 1024
  source.connect(analyser)
  const samples = new Float32Array(analyser.fftSize)
  let frame = 0
  const tick = (): void => {
    analyser.getFloatTimeDomainData(samples)
    let sum = 0
    for (const s of samples) sum += s * s
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4))
    frame = requestAnimationFrame(tick)
  }
  void context.resume().then(tick)
  return () => {
    cancelAnimationFrame(frame)
    source.disconnect()
    void context.close()
  }
}

/** Gather candidates through TURN only; a relayed candidate means the TURN server works for us. */
export async function checkTurn(): Promise<TurnResult> {
  const config = await rtcConfiguration()
  const turn = (config.iceServers ?? []).filter((s) =>
    (Array.isArray(s.urls) ? s.urls : [s.urls]).some((u) => u.startsWith('turn:') || u.startsWith('turns:')),
  )
  if (turn.length === 0) return { ok: false, reason: 'not-configured', detail: '' }
  const pc = new RTCPeerConnection({ iceServers: turn, iceTransportPolicy: 'relay' })
  const errors: string[] = []
  let auth = false
  try {
    return await new Promise<TurnResult>((resolve) => {
      const timer = setTimeout(() => finish(), TURN_TIMEOUT_MS)
      const finish = (relay?: string): void => {
        clearTimeout(timer)
        if (relay) resolve({ ok: true, relay })
        else resolve({ ok: false, reason: auth ? 'auth' : 'unreachable', detail: errors.join('; ') })
      }
      pc.addEventListener('icecandidateerror', (e) => {
        const error = e as RTCPeerConnectionIceErrorEvent
        if (error.errorCode === 401 || error.errorCode === 403 || error.errorCode === 438) auth = true
        errors.push(`${error.errorCode} ${error.errorText}`.trim())
      })
      pc.addEventListener('icecandidate', (e) => {
        if (e.candidate?.type === 'relay') finish(`${e.candidate.address ?? ''}:${e.candidate.port ?? ''}`)
        else if (!e.candidate) finish()
      })
      pc.createDataChannel('probe')
      void pc.createOffer().then((offer) => pc.setLocalDescription(offer))
    })
  } finally {
    pc.close()
  }
}
