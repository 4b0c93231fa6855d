import type { RouteLocationNormalizedLoaded } from 'vue-router'

/** Where to go after sign-in: a same-app path from ?redirect=, never another origin. */
export function safeRedirect(route: RouteLocationNormalizedLoaded): string {
  const target = route.query.redirect
  return typeof target === 'string' && target.startsWith('/') && !target.startsWith('//') ? target : '/'
}
