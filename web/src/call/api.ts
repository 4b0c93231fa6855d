// The calls API (docs/api.md): start, answer, report media, leave; and the ICE servers.

import { api } from '../api'

export type CallState = 'ringing' | 'accepted' | 'declined' | 'connected' | 'ended' | 'timed_out'

export interface CallParticipant {
  user_id: string
  display_name: string
  answer: string
  invited_at: string
  joined_at: string | null
  left_at: string | null
}

export interface CallOut {
  id: string
  consult_id: string
  state: CallState
  created_by_user_id: string
  created_at: string
  accepted_at: string | null
  connected_at: string | null
  ended_at: string | null
  participants: CallParticipant[]
}

export interface IceServer {
  urls: string[]
  username?: string | null
  credential?: string | null
}

export const startCall = (consultId: string, inviteeIds: string[]): Promise<CallOut> =>
  api.post<CallOut>(`/api/v1/consults/${consultId}/calls`, { invitee_ids: inviteeIds })
export const getCall = (callId: string): Promise<CallOut> => api.get<CallOut>(`/api/v1/calls/${callId}`)
export const acceptCall = (callId: string): Promise<CallOut> => api.post<CallOut>(`/api/v1/calls/${callId}/accept`, {})
export const declineCall = (callId: string): Promise<CallOut> => api.post<CallOut>(`/api/v1/calls/${callId}/decline`, {})
export const reportConnected = (callId: string): Promise<CallOut> =>
  api.post<CallOut>(`/api/v1/calls/${callId}/connected`, {})
/** An expert the policy lets take part in the call's consult: the centre's, or the partner
 * hospital's once the consult is escalated to it (`partner`). */
export interface Invitee {
  id: string
  display_name: string
  institution_id: string
  institution_name_zh: string
  institution_name_en: string
  partner: boolean
}

/** Whom the call panel may invite (participants only; those already invited are left out). */
export const getInvitees = (callId: string): Promise<{ items: Invitee[] }> =>
  api.get<{ items: Invitee[] }>(`/api/v1/calls/${callId}/invitees`)
/** Invite another expert into a call under way (at most four participants: 409 when full). */
export const inviteToCall = (callId: string, userId: string): Promise<CallOut> =>
  api.post<CallOut>(`/api/v1/calls/${callId}/invite`, { user_id: userId })
export const hangupCall = (callId: string): Promise<CallOut> => api.post<CallOut>(`/api/v1/calls/${callId}/hangup`, {})

interface RtcConfigOut {
  ice_servers: IceServer[]
  ttl_seconds: number
  ice_transport_policy: 'all' | 'relay'
}

/** The peer connection's configuration: ICE servers with fresh TURN credentials, and the policy. */
export async function rtcConfiguration(): Promise<RTCConfiguration> {
  const body = await api.get<RtcConfigOut>('/api/v1/rtc/ice-servers')
  return {
    iceServers: body.ice_servers.map((s) => ({
      urls: s.urls,
      ...(s.username ? { username: s.username } : {}),
      ...(s.credential ? { credential: s.credential } : {}),
    })),
    iceTransportPolicy: body.ice_transport_policy,
  }
}

export type RecordingState = 'asking' | 'refused' | 'consented' | 'recording' | 'stopping' | 'saved' | 'failed'

export interface RecordingOut {
  id: string
  call_id: string
  state: RecordingState
  requested_by_user_id: string
  requested_at: string
  started_at: string | null
  recording_since: string | null
  ended_at: string | null
  attachment_id: string | null
  consents: { user_id: string; display_name: string; consent: boolean; at: string }[]
  waiting_for: string[]
}

const recordingPath = (callId: string): string => `/api/v1/calls/${callId}/recording`
export const requestRecording = (callId: string): Promise<RecordingOut> => api.post<RecordingOut>(recordingPath(callId), {})
export const getRecording = (callId: string): Promise<RecordingOut> => api.get<RecordingOut>(recordingPath(callId))
export const consentRecording = (callId: string, consent: boolean): Promise<RecordingOut> =>
  api.post<RecordingOut>(`${recordingPath(callId)}/consent`, { consent })
export const startRecording = (callId: string): Promise<RecordingOut> =>
  api.post<RecordingOut>(`${recordingPath(callId)}/start`, {})
/** Stop a recording under way (any participant; consent withdrawn): 409 `not-recording` otherwise. */
export const stopRecording = (callId: string): Promise<RecordingOut> =>
  api.post<RecordingOut>(`${recordingPath(callId)}/stop`, {})

/** Call events (call.ringing, call.accepted, …) carry the call id in their payload. */
export const CALL_EVENT_TYPES = ['call.ringing', 'call.accepted', 'call.declined', 'call.connected', 'call.ended', 'call.timed_out']
