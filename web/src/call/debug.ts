// The calls' test hook. Opening any page with `?debug` marks this tab (sessionStorage, so it
// survives navigation inside the app); a call page in a marked tab exposes its live
// RTCPeerConnection as `window.__huizhenCall` (for getStats() in the Chromium tests). Never
// otherwise.

const KEY = 'huizhen.debug'

/** At start-up, before the router drops the query. */
export function rememberDebugFlag(): void {
  try {
    if (new URLSearchParams(window.location.search).has('debug')) sessionStorage.setItem(KEY, '1')
  } catch {
    // storage refused: no hook
  }
}

export function debugEnabled(): boolean {
  try {
    return sessionStorage.getItem(KEY) === '1' || new URLSearchParams(window.location.search).has('debug')
  } catch {
    return false
  }
}
