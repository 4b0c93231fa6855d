// The quality monitor: every 2 s it reads getStats() of the call's connection and steps the media
// mode down when the network is poor for three samples in a row (6 s):
// - to `low` when packet loss exceeds 8 % or the available outgoing bitrate is under 250 kbit/s;
// - to `audio` when packet loss exceeds 20 % or the available outgoing bitrate is under 80 kbit/s.
// Loss is the worse of what we receive (inbound-rtp packetsLost against packetsReceived, over the
// sample) and what the other side reports of our sending (remote-inbound-rtp fractionLost).
// It never steps up by itself (a flapping picture is worse than a steady small one): the user
// can. The first 10 s after connecting are not judged (the bandwidth estimate starts low), nor
// the 10 s after ICE comes back from an outage (the estimate starts again, and the loss of the
// outage itself is reported as ICE recovers: the network is judged once it carries media), nor
// the 30 s after the user chose a mode.

import type { MediaMode } from './mode'

export const SAMPLE_MS = 2_000
export const POOR_SAMPLES = 3
export const WARM_UP_MS = 10_000
export const USER_CHOICE_HOLD_MS = 30_000
export const THRESHOLDS = {
  low: { loss: 0.08, bitrate: 250_000 },
  audio: { loss: 0.2, bitrate: 80_000 },
}

export interface Sample {
  /** Fraction 0…1 of packets lost in the sample (the worse direction). */
  loss: number
  /** Available outgoing bitrate of the selected pair, bit/s, when the browser knows it. */
  bitrate: number | null
}

const RANK: Record<MediaMode, number> = { full: 0, low: 1, audio: 2 }

/** The mode a sample asks for (never above `full`). */
export function wanted(sample: Sample): MediaMode {
  const poor = (t: { loss: number; bitrate: number }): boolean =>
    sample.loss > t.loss || (sample.bitrate !== null && sample.bitrate < t.bitrate)
  if (poor(THRESHOLDS.audio)) return 'audio'
  if (poor(THRESHOLDS.low)) return 'low'
  return 'full'
}

export class QualityMonitor {
  private timer: ReturnType<typeof setInterval> | null = null
  private streak: MediaMode[] = []
  private previous = { received: 0, lost: 0 }
  private holdUntil = Date.now() + WARM_UP_MS
  /** ICE was down at the last sample. */
  private down = false
  last: Sample | null = null

  constructor(
    private readonly pc: RTCPeerConnection,
    private readonly current: () => MediaMode,
    private readonly stepDown: (mode: MediaMode) => void,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.sample().catch(() => undefined), SAMPLE_MS)
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** The user chose a mode: leave it alone for a while. */
  userChose(): void {
    this.holdUntil = Date.now() + USER_CHOICE_HOLD_MS
    this.streak = []
  }

  private async sample(): Promise<void> {
    const state = this.pc.iceConnectionState
    if (state !== 'connected' && state !== 'completed') {
      this.streak = []
      this.down = true
      return
    }
    if (this.down) {
      this.down = false
      this.holdUntil = Math.max(this.holdUntil, Date.now() + WARM_UP_MS)
    }
    const stats = await this.pc.getStats()
    let received = 0
    let lost = 0
    let remoteLoss = 0
    let bitrate: number | null = null
    let pairId: string | null = null
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp') {
        received += r.packetsReceived ?? 0
        lost += Math.max(0, r.packetsLost ?? 0)
      } else if (r.type === 'remote-inbound-rtp') {
        remoteLoss = Math.max(remoteLoss, r.fractionLost ?? 0)
      } else if (r.type === 'transport' && r.selectedCandidatePairId) {
        pairId = r.selectedCandidatePairId
      }
    })
    if (pairId) {
      const pair = stats.get(pairId)
      if (typeof pair?.availableOutgoingBitrate === 'number') bitrate = pair.availableOutgoingBitrate
    }
    const dReceived = received - this.previous.received
    const dLost = lost - this.previous.lost
    this.previous = { received, lost }
    const inboundLoss = dReceived + dLost > 0 ? dLost / (dReceived + dLost) : 0
    this.last = { loss: Math.max(inboundLoss, remoteLoss), bitrate }
    if (Date.now() < this.holdUntil) return
    this.streak = [...this.streak, wanted(this.last)].slice(-POOR_SAMPLES)
    if (this.streak.length < POOR_SAMPLES) return
    const target = this.streak.reduce((a, b) => (RANK[a] <= RANK[b] ? a : b)) // the mildest of the run
    if (RANK[target] > RANK[this.current()]) {
      this.streak = []
      this.stepDown(target)
    }
  }
}
