import { onBeforeUnmount, onMounted } from 'vue'
import { onFeed, type FeedBatch } from '../feed'
import type { FeedEvent } from '../types'

/**
 * Call `refresh` while the component is mounted whenever the feed brings events that
 * `relevant` picks (all consult and report events by default).
 */
export function useFeed(refresh: (events: FeedEvent[], batch: FeedBatch) => void, relevant?: (event: FeedEvent) => boolean): void {
  let off: (() => void) | null = null
  onMounted(() => {
    off = onFeed((batch) => {
      const events = relevant ? batch.events.filter(relevant) : batch.events
      if (events.length) refresh(events, batch)
    })
  })
  onBeforeUnmount(() => off?.())
}
