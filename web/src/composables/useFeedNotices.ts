// Pop-up notices for news from the feed: a report arriving at the station (a critical one
// stays until closed), a consult returned for more information, a new request on a centre's
// worklist, a case assigned to me, a message or a file from the other side, a referral asked
// of us or answered. The backlog read at start-up is not news.

import { onBeforeUnmount } from 'vue'
import { useI18n } from 'vue-i18n'
import { useRouter } from 'vue-router'
import { ElNotification } from 'element-plus'
import 'element-plus/es/components/notification/style/css'
import { onFeed } from '../feed'
import { can, me } from '../session'
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
    /** Where a click leads (default: the consult). */
    to?: 'referrals'
  }

  function green(event: FeedEvent): string {
    return event.payload.green_channel === true ? t('feed.greenChannel') : ''
  }

  function direction(event: FeedEvent): string {
    const d = event.payload.direction
    return d === 'up' || d === 'down' ? t(`report.referral.${d}`) : ''
  }

  function notice(event: FeedEvent): Notice | null {
    // A supervisor's feed may carry events of the institution (a referral to the lead
    // hospital) that are not theirs to act on: only news one can open is shown.
    if (event.type.startsWith('referral.') ? !can('referral') : !can('consult.read')) return null
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
      case 'call.ringing':
        return { type: 'warning', title: t('call.ringTitle'), message: t('call.ringMessage'), duration: 30_000 }
      case 'consult.message':
        return { type: 'info', title: t('feed.messageTitle'), message: t('feed.message', { centre }) }
      case 'consult.attachment':
        return { type: 'info', title: t('feed.attachmentTitle'), message: t('feed.attachment', { centre }) }
      case 'referral.requested':
        return {
          type: event.payload.green_channel === true ? 'error' : 'warning',
          title: t('feed.referralRequestedTitle'),
          message: t('feed.referralRequested', { direction: direction(event), green: green(event) }),
          duration: event.payload.green_channel === true ? 0 : 8000,
          to: 'referrals',
        }
      case 'referral.accepted':
      case 'referral.declined':
      case 'referral.completed':
      case 'referral.cancelled': {
        const state = event.type.slice('referral.'.length) as 'accepted' | 'declined' | 'completed' | 'cancelled'
        return {
          type: state === 'declined' || state === 'cancelled' ? 'warning' : 'success',
          title: t('feed.referralChangedTitle'),
          message: t('feed.referralChanged', { direction: direction(event), state: t(`referrals.states.${state}`) }),
          to: 'referrals',
        }
      }
      default:
        return null
    }
  }

  function onConsultPage(id: string | null): boolean {
    const route = router.currentRoute.value
    return !!id && route.name === 'consult' && route.params.id === id
  }

  const off = onFeed(({ events, initial }) => {
    if (initial) return
    // One event reaches a user on several streams (their own and their station's): say it once.
    const seen = new Set<string>()
    let shown = 0
    for (const event of events) {
      const p = event.payload
      const key = `${event.type}:${event.consult_id ?? ''}:${String(p.version ?? '')}:${String(p.referral_id ?? p.message_id ?? p.attachment_id ?? '')}`
      if (seen.has(key)) continue
      seen.add(key)
      const options = notice(event)
      if (!options || shown >= SHOWN_PER_POLL) continue
      // A message or file for the consult on screen shows up in its panel already.
      if ((event.type === 'consult.message' || event.type === 'consult.attachment' || event.type === 'call.ringing') && onConsultPage(event.consult_id)) continue
      shown += 1
      const id = event.consult_id
      const { to, ...display } = options
      const onClick =
        to === 'referrals'
          ? () => void router.push({ name: 'referrals' })
          : id
            ? () => void router.push({ name: 'consult', params: { id } })
            : undefined
      ElNotification({
        position: 'bottom-right',
        duration: 8000,
        ...display,
        customClass: 'feed-notice',
        onClick,
      })
    }
  })
  onBeforeUnmount(off)
}
