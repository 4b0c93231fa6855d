// The requesting station's inbox of results: consults whose report is signed and not yet
// acknowledged here, critical first. The menu shows how many wait.

import { computed, ref } from 'vue'
import { getConsult, latestSigned, listConsults } from './consults'
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

/** Critical flags by consult id, valid while the consult's version is unchanged. */
const criticalCache = new Map<string, { version: number; critical: boolean }>()
let loading: Promise<void> | null = null
let again = false

async function criticalOf(consult: ConsultOut): Promise<boolean> {
  const cached = criticalCache.get(consult.id)
  if (cached && cached.version === consult.version) return cached.critical
  const detail = await getConsult(consult.id)
  const critical = latestSigned(detail.reports)?.critical ?? false
  criticalCache.set(consult.id, { version: detail.version, critical })
  return critical
}

function byUrgency(a: InboxItem, b: InboxItem): number {
  if (a.critical !== b.critical) return a.critical ? -1 : 1
  return (a.consult.reported_at ?? '').localeCompare(b.consult.reported_at ?? '')
}

async function load(): Promise<void> {
  const list = await listConsults({ state: 'reported', limit: 200 })
  const items = await Promise.all(list.items.map(async (consult) => ({ consult, critical: await criticalOf(consult) })))
  inboxItems.value = items.sort(byUrgency)
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
  criticalCache.clear()
}
