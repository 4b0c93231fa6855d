// The requesting station's inbox of results: consults whose report is signed and not yet
// acknowledged here, critical first. The menu shows how many wait.

import { computed, ref } from 'vue'
import { listConsults } from './consults'
import type { ConsultOut } from './types'

export interface InboxItem {
  consult: ConsultOut
  /** The latest signed report holds a critical value (危急值). */
  critical: boolean
}

export const inboxItems = ref<InboxItem[]>([])
export const inboxLoaded = ref(false)
export const inboxCount = computed(() => inboxItems.value.length)
export const inboxCritical = computed(() => inboxItems.value.filter((i) => i.critical).length)

let loading: Promise<void> | null = null
let again = false

function byUrgency(a: InboxItem, b: InboxItem): number {
  if (a.critical !== b.critical) return a.critical ? -1 : 1
  return (a.consult.reported_at ?? '').localeCompare(b.consult.reported_at ?? '')
}

async function load(): Promise<void> {
  // Signed results waiting here, and critical values not yet acknowledged in any state: a lab's
  // critical value (危急值) arrives before its report is signed.
  const [reported, critical] = await Promise.all([
    listConsults({ state: 'reported', limit: 200 }),
    listConsults({ critical_pending: true, limit: 200 }),
  ])
  const byId = new Map<string, ConsultOut>()
  for (const consult of [...reported.items, ...critical.items]) byId.set(consult.id, consult)
  inboxItems.value = [...byId.values()]
    .map((consult) => ({ consult, critical: consult.critical_pending }))
    .sort(byUrgency)
  inboxLoaded.value = true
}

/** Re-read the inbox; calls made while a read runs are folded into one more read. */
export function refreshInbox(): Promise<void> {
  if (loading) {
    again = true
    return loading
  }
  loading = load()
    .catch((error: unknown) => console.warn('inbox refresh failed', error))
    .finally(() => {
      loading = null
      if (again) {
        again = false
        void refreshInbox()
      }
    })
  return loading
}

export function clearInbox(): void {
  inboxItems.value = []
  inboxLoaded.value = false
}
