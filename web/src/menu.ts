// The side menu, built from what the signed-in user may do.
import { computed, type Component } from 'vue'
import { Document, House, Lock, OfficeBuilding, Tickets, UserFilled } from '@element-plus/icons-vue'
import { can, me } from './session'
import type { Permission } from './types'

export interface MenuItem {
  name: string
  path: string
  /** i18n key */
  label: string
  icon: Component
  permission?: Permission
}

const ITEMS: MenuItem[] = [
  { name: 'home', path: '/', label: 'nav.home', icon: House },
  { name: 'patients', path: '/patients', label: 'nav.patients', icon: Tickets, permission: 'patient.read' },
  { name: 'audit', path: '/audit', label: 'nav.audit', icon: Document, permission: 'audit.read' },
  { name: 'users', path: '/users', label: 'nav.users', icon: UserFilled, permission: 'user.read' },
  { name: 'directory', path: '/directory', label: 'nav.directory', icon: OfficeBuilding, permission: 'directory.read' },
  { name: 'account', path: '/account', label: 'nav.account', icon: Lock, permission: 'self' },
]

export const menuItems = computed(() => (me.value ? ITEMS.filter((i) => !i.permission || can(i.permission)) : []))
