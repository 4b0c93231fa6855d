// The supervisor's figures (综合监管): the API call and the sums the dashboard shows. No patient
// data here: volumes, turnaround against targets, overdue cases, critical values.

import { api } from './api'
import type { FigureGroup, Figures } from './types'

export const RANGES = [7, 30, 90] as const
export type RangeDays = (typeof RANGES)[number]

const DAY_MS = 86_400_000

/**
 * The window of the last `days` days, today included. The server counts days by UTC date, so
 * the window starts at a UTC midnight and the chart's days are UTC dates.
 */
export function windowOf(days: RangeDays, now: Date = new Date()): { since: string; days: string[] } {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())
  const start = today - (days - 1) * DAY_MS
  const list: string[] = []
  for (let t = start; t <= today; t += DAY_MS) list.push(new Date(t).toISOString().slice(0, 10))
  return { since: new Date(start).toISOString(), days: list }
}

export function getFigures(since: string, signal?: AbortSignal): Promise<Figures> {
  return api.get<Figures>('/api/v1/figures', { since }, signal)
}

export interface Totals {
  submitted: number
  reported: number
  open: number
  overdueOpen: number
  flaggedOverdue: number
  critical: number
  criticalUnacknowledged: number
  /** Share (0–1) of reported consults answered within target, over every group; null: none reported. */
  withinTarget: number | null
}

/** Sums over disjoint groups (the centres partition the consults). */
export function totals(groups: FigureGroup[]): Totals {
  let within = 0
  const t: Totals = {
    submitted: 0,
    reported: 0,
    open: 0,
    overdueOpen: 0,
    flaggedOverdue: 0,
    critical: 0,
    criticalUnacknowledged: 0,
    withinTarget: null,
  }
  for (const g of groups) {
    t.submitted += g.submitted
    t.reported += g.turnaround.reported
    t.open += g.open
    t.overdueOpen += g.overdue_open
    t.flaggedOverdue += g.flagged_overdue
    t.critical += g.critical
    t.criticalUnacknowledged += g.critical_unacknowledged
    within += (g.turnaround.within_target ?? 0) * g.turnaround.reported
  }
  t.withinTarget = t.reported ? within / t.reported : null
  return t
}

/** Counts per day over the window, 0 where the server has no entry. */
export function series(group: FigureGroup | undefined, days: string[]): number[] {
  return days.map((d) => group?.by_day[d] ?? 0)
}

/** A group with nothing in it, for a centre without consults in the window. */
export function emptyGroup(key: string): FigureGroup {
  return {
    key,
    submitted: 0,
    by_day: {},
    by_priority: {},
    turnaround: { reported: 0, p50_minutes: null, p90_minutes: null, within_target: null },
    open: 0,
    overdue_open: 0,
    flagged_overdue: 0,
    critical: 0,
    critical_ack_p50_minutes: null,
    critical_ack_p90_minutes: null,
    critical_unacknowledged: 0,
  }
}

/** < 1 min, 42 min, 3.5 h, 2.1 d — or — when there is nothing to measure. */
export function minutesText(minutes: number | null | undefined, units: { min: string; h: string; d: string }): string {
  if (minutes === null || minutes === undefined) return '—'
  if (minutes < 1) return `< 1 ${units.min}`
  if (minutes < 90) return `${Math.round(minutes)} ${units.min}`
  if (minutes < 48 * 60) return `${(minutes / 60).toFixed(1)} ${units.h}`
  return `${(minutes / 1440).toFixed(1)} ${units.d}`
}

export function percentText(share: number | null | undefined): string {
  return share === null || share === undefined ? '—' : `${Math.round(share * 100)}%`
}
