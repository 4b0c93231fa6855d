import { createRouter, createWebHistory } from 'vue-router'
import { safeRedirect } from './redirect'
import { setUnauthorizedHandler } from './api'
import { i18n } from './i18n'
import { can, dropSession, me, restoreSession } from './session'
import type { Permission } from './types'
import AppLayout from './layouts/AppLayout.vue'
import LoginView from './views/LoginView.vue'

declare module 'vue-router' {
  interface RouteMeta {
    /** i18n key of the page title. */
    title?: string
    /** Open to everybody (sign-in, 404). */
    public?: boolean
    /** Needed to open the page; without it the user is sent home. */
    permission?: Permission
  }
}

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/login', name: 'login', component: LoginView, meta: { public: true, title: 'login.title' } },
    {
      path: '/',
      component: AppLayout,
      children: [
        { path: '', name: 'home', component: () => import('./views/HomeView.vue'), meta: { title: 'nav.home' } },
        {
          path: 'patients',
          name: 'patients',
          component: () => import('./views/PatientsView.vue'),
          meta: { title: 'nav.patients', permission: 'patient.read' },
        },
        {
          path: 'patients/:id',
          name: 'patient',
          component: () => import('./views/PatientDetailView.vue'),
          meta: { title: 'patients.detail', permission: 'patient.read' },
        },
        {
          path: 'consults/new',
          name: 'consult-new',
          component: () => import('./views/consult/ConsultNewView.vue'),
          meta: { title: 'nav.newConsult', permission: 'consult.request' },
        },
        {
          path: 'consults',
          name: 'consults',
          component: () => import('./views/consult/ConsultsView.vue'),
          meta: { title: 'nav.myConsults', permission: 'consult.read' },
        },
        {
          path: 'consults/:id',
          name: 'consult',
          component: () => import('./views/consult/ConsultDetailView.vue'),
          meta: { title: 'consult.detail', permission: 'consult.read' },
        },
        {
          path: 'inbox',
          name: 'inbox',
          component: () => import('./views/consult/InboxView.vue'),
          meta: { title: 'nav.inbox', permission: 'consult.request' },
        },
        {
          path: 'worklist',
          name: 'worklist',
          component: () => import('./views/consult/WorklistView.vue'),
          meta: { title: 'nav.worklist', permission: 'consult.read' },
        },
        {
          path: 'precall',
          name: 'precall',
          component: () => import('./views/PreCallView.vue'),
          meta: { title: 'precall.menu', permission: 'call' },
        },
        {
          path: 'referrals',
          name: 'referrals',
          component: () => import('./views/ReferralsView.vue'),
          meta: { title: 'nav.referrals', permission: 'referral' },
        },
        {
          // Lazy: ECharts is loaded with this page only.
          path: 'dashboard',
          name: 'dashboard',
          component: () => import('./views/DashboardView.vue'),
          meta: { title: 'nav.dashboard', permission: 'figures.read' },
        },
        {
          path: 'directory',
          name: 'directory',
          component: () => import('./views/DirectoryView.vue'),
          meta: { title: 'nav.directory', permission: 'directory.read' },
        },
        {
          path: 'audit',
          name: 'audit',
          component: () => import('./views/AuditView.vue'),
          meta: { title: 'nav.audit', permission: 'audit.read' },
        },
        {
          path: 'users',
          name: 'users',
          component: () => import('./views/UsersView.vue'),
          meta: { title: 'nav.users', permission: 'user.read' },
        },
        {
          path: 'account',
          name: 'account',
          component: () => import('./views/AccountView.vue'),
          meta: { title: 'nav.account', permission: 'self' },
        },
      ],
    },
    {
      path: '/:pathMatch(.*)*',
      name: 'not-found',
      component: () => import('./views/NotFoundView.vue'),
      meta: { public: true, title: 'notFound.title' },
    },
  ],
})

router.beforeEach(async (to) => {
  await restoreSession()
  if (to.name === 'login') {
    return me.value ? safeRedirect(to) : true
  }
  if (to.meta.public) return true
  if (!me.value) return { name: 'login', query: to.fullPath === '/' ? {} : { redirect: to.fullPath } }
  if (to.meta.permission && !can(to.meta.permission)) return { name: 'home' }
  return true
})

export function updateTitle(): void {
  const key = router.currentRoute.value.meta.title
  const brand = i18n.global.t('app.brand')
  document.title = key ? `${i18n.global.t(key)} · ${brand}` : brand
}

router.afterEach(() => updateTitle())

// Any 401 on a signed-in request: the session is gone; back to the sign-in page.
setUnauthorizedHandler(() => {
  if (!me.value) return
  dropSession()
  const current = router.currentRoute.value
  if (current.name !== 'login') {
    void router.replace({ name: 'login', query: { redirect: current.fullPath, expired: '1' } })
  }
})
