// Media modes for poor networks, applied to an RTCRtpSender with setParameters (no
// renegotiation): `full` as captured; `low` at most 180 lines, 15 frames/s and 150 kbit/s
// (640×480 from the camera becomes 240×180; 1280×720 becomes 320×180); `audio` stops sending
// video (the encoding is made inactive: no video packets at all) and keeps the microphone.

export type MediaMode = 'full' | 'low' | 'audio'
export const MEDIA_MODES: readonly MediaMode[] = ['full', 'low', 'audio']

export const LOW_HEIGHT = 180
export const LOW_FPS = 15
export const LOW_BITRATE = 150_000

/** What a side tells the other over the control channel. */
export interface ModeMessage {
  type: 'mode'
  mode: MediaMode
  /** Taken by the quality monitor rather than chosen by the user. */
  auto: boolean
}

export function isModeMessage(value: unknown): value is ModeMessage {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return v.type === 'mode' && MEDIA_MODES.includes(v.mode as MediaMode) && typeof v.auto === 'boolean'
}

export async function applyMode(sender: RTCRtpSender, mode: MediaMode): Promise<void> {
  const track = sender.track
  if (!track || track.kind !== 'video') return
  const params = sender.getParameters()
  if (!params.encodings || params.encodings.length === 0) return // not negotiated yet
  const height = track.getSettings().height ?? LOW_HEIGHT
  for (const encoding of params.encodings) {
    encoding.active = mode !== 'audio'
    if (mode === 'low') {
      encoding.scaleResolutionDownBy = Math.max(1, height / LOW_HEIGHT)
      encoding.maxFramerate = LOW_FPS
      encoding.maxBitrate = LOW_BITRATE
    } else {
      encoding.scaleResolutionDownBy = 1
      delete encoding.maxFramerate
      delete encoding.maxBitrate
    }
  }
  await sender.setParameters(params)
}
