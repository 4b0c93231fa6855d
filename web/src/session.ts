// Who is signed in. The session itself is the HttpOnly cookie; the browser keeps only the
// user's profile (Me) in memory and restores it with GET /auth/me at start-up.

import { computed, ref } from 'vue'
import { ApiError, api, rememberCsrf } from './api'
import { clearDirectory } from './directory'
import type { LoginResult, Me, Permission, Role } from './types'

export const me = ref<Me | null>(null)

/** Highest first: the role whose home page a user with several roles sees. */
export const ROLE_PRIORITY: readonly Role[] = [
  'admin',
  'supervisor',
  'centre_coordinator',
  'stroke_team',
  'specialist',
  'grassroots_doctor',
  'ambulance',
  'interface',
]

export const primaryRole = computed<Role | null>(() => {
  const roles = me.value?.roles ?? []
  return ROLE_PRIORITY.find((role) => roles.includes(role)) ?? null
})

export function can(permission: Permission): boolean {
  return me.value?.permissions.includes(permission) ?? false
}

export function hasRole(role: Role): boolean {
  return me.value?.roles.includes(role) ?? false
}

let restoring: Promise<void> | null = null

/** Ask the server whether the cookie is still a session; once per page load. */
export function restoreSession(): Promise<void> {
  restoring ??= (async () => {
    try {
      me.value = await api.get<Me>('/api/v1/auth/me')
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) console.warn('session restore failed', error)
      me.value = null
    }
  })()
  return restoring
}

export async function signIn(username: string, password: string): Promise<Me> {
  const result = await api.post<LoginResult>('/api/v1/auth/login', { username, password }, { anonymous: true })
  rememberCsrf(result.csrf_token)
  clearDirectory()
  me.value = result.user
  return result.user
}

/** Forget the session locally (after sign-out, or when the server says 401). */
export function dropSession(): void {
  me.value = null
  rememberCsrf(null)
  clearDirectory()
}

export async function signOut(): Promise<void> {
  try {
    await api.post<void>('/api/v1/auth/logout', undefined, { anonymous: true })
  } catch (error) {
    // An already-expired session is signed out anyway.
    if (!(error instanceof ApiError && error.status === 401)) throw error
  } finally {
    dropSession()
  }
}
