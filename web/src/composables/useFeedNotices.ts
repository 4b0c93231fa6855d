// Pop-up notices for news from the feed: a report arriving at the station (a critical one
// stays until closed), a consult returned for more information, a new request on a centre's
// worklist, a case assigned to me. The backlog read at start-up is not news.

import { onBeforeUnmount } from 'vue'
import { useI18n } from 'vue-i18n'
import { useRouter } from 'vue-router'
import { ElNotification } from 'element-plus'
import 'element-plus/es/components/notification/style/css'
import { onFeed } from '../feed'
import { me } from '../session'
import type { FeedEvent } from '../types'

const SHOWN_PER_POLL = 3

export function useFeedNotices(): void {
  const { t } = useI18n()
  const router = useRouter()

  function centreName(event: FeedEvent): string {
    const centre = event.payload.centre
    return typeof centre === 'string' && ['ecg', 'imaging', 'consultation', 'lab', 'pathology'].includes(centre)
      ? t(`consult.centreNames.${centre as 'ecg'}`)
      : ''
  }

  function priorityName(event: FeedEvent): string {
    const p = event.payload.priority
    return p === 'stat' || p === 'urgent' || p === 'routine' ? t(`consult.priorities.${p}`) : ''
  }

  interface Notice {
    type: 'success' | 'warning' | 'info' | 'error'
    title: string
    message: string
    duration?: number
  }

  function notice(event: FeedEvent): Notice | null {
    const centre = centreName(event)
    switch (event.type) {
      case 'report.critical':
        return { type: 'error', title: t('feed.criticalTitle'), message: t('feed.critical', { centre }), duration: 0 }
      case 'critical.unacknowledged':
        return {
          type: 'error',
          title: t('feed.criticalTitle'),
          message: t('feed.criticalReminder', { centre, n: Number(event.payload.reminder ?? 1) }),
          duration: 0,
        }
      case 'consult.overdue':
        return { type: 'warning', title: t('feed.overdueTitle'), message: t('feed.overdue', { centre, priority: priorityName(event) }) }
      case 'report.signed':
        return event.payload.critical === true
          ? null // the report.critical notice says it
          : { type: 'success', title: t('feed.reportTitle'), message: t('feed.report', { centre }) }
      case 'consult.returned':
        return { type: 'warning', title: t('feed.returnedTitle'), message: t('feed.returned', { centre }) }
      case 'consult.submitted':
        return { type: 'info', title: t('feed.submittedTitle'), message: t('feed.submitted', { centre, priority: priorityName(event) }) }
      case 'consult.assigned':
        return event.payload.assignee_id === me.value?.id
          ? { type: 'info', title: t('feed.assignedTitle'), message: t('feed.assigned', { centre }) }
          : null
      default:
        return null
    }
  }

  const off = onFeed(({ events, initial }) => {
    if (initial) return
    // One event reaches a user on several streams (their own and their station's): say it once.
    const seen = new Set<string>()
    let shown = 0
    for (const event of events) {
      const key = `${event.type}:${event.consult_id ?? ''}:${String(event.payload.version ?? '')}`
      if (seen.has(key)) continue
      seen.add(key)
      const options = notice(event)
      if (!options || shown >= SHOWN_PER_POLL) continue
      shown += 1
      const id = event.consult_id
      ElNotification({
        position: 'bottom-right',
        duration: 8000,
        ...options,
        customClass: 'feed-notice',
        onClick: id ? () => void router.push({ name: 'consult', params: { id } }) : undefined,
      })
    }
  })
  onBeforeUnmount(off)
}
