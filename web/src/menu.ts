// The side menu, built from what the signed-in user may do.
import { computed, type Component } from 'vue'
import {
  Bell,
  ChatDotSquare,
  CirclePlus,
  DataAnalysis,
  Document,
  House,
  List,
  Lock,
  OfficeBuilding,
  Position,
  Tickets,
  UserFilled,
  VideoCamera,
} from '@element-plus/icons-vue'
import { inboxCount } from './inbox'
import { incomingRequested } from './referrals'
import { can, hasRole, me } from './session'
import type { Permission } from './types'

export interface MenuItem {
  name: string
  path: string
  /** i18n key */
  label: string
  icon: Component
  permission?: Permission
  /** Further condition beyond the permission. */
  when?: () => boolean
  /** A count shown beside the label (hidden at zero). */
  badge?: () => number
}

const onCentreSide = () => (me.value?.centres.length ?? 0) > 0 && (can('consult.work') || can('consult.coordinate'))

const ITEMS: MenuItem[] = [
  { name: 'home', path: '/', label: 'nav.home', icon: House },
  { name: 'worklist', path: '/worklist', label: 'nav.worklist', icon: List, permission: 'consult.read', when: onCentreSide },
  { name: 'consult-new', path: '/consults/new', label: 'nav.newConsult', icon: CirclePlus, permission: 'consult.request' },
  {
    name: 'consults',
    path: '/consults',
    label: 'nav.myConsults',
    icon: ChatDotSquare,
    permission: 'consult.read',
    when: () => hasRole('grassroots_doctor') || onCentreSide(),
  },
  { name: 'inbox', path: '/inbox', label: 'nav.inbox', icon: Bell, permission: 'consult.request', badge: () => inboxCount.value },
  { name: 'referrals', path: '/referrals', label: 'nav.referrals', icon: Position, permission: 'referral', badge: () => incomingRequested.value },
  { name: 'dashboard', path: '/dashboard', label: 'nav.dashboard', icon: DataAnalysis, permission: 'figures.read' },
  { name: 'patients', path: '/patients', label: 'nav.patients', icon: Tickets, permission: 'patient.read' },
  { name: 'audit', path: '/audit', label: 'nav.audit', icon: Document, permission: 'audit.read' },
  { name: 'users', path: '/users', label: 'nav.users', icon: UserFilled, permission: 'user.read' },
  { name: 'directory', path: '/directory', label: 'nav.directory', icon: OfficeBuilding, permission: 'directory.read' },
  { name: 'precall', path: '/precall', label: 'precall.menu', icon: VideoCamera, permission: 'call' },
  { name: 'account', path: '/account', label: 'nav.account', icon: Lock, permission: 'self' },
]

export const menuItems = computed(() =>
  me.value
    ? ITEMS.filter((i) => (!i.permission || can(i.permission)) && (!i.when || i.when())).map((i) =>
        // The consult list is "my consults" at a station, "centre consults" at a centre.
        i.name === 'consults' && !hasRole('grassroots_doctor') ? { ...i, label: 'nav.centreConsults' } : i,
      )
    : [],
)
