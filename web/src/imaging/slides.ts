// Whole-slide images: the pyramid of a series, its tiles, and the arithmetic of a pan/zoom view
// (which level to draw, which tiles are on screen, a scale bar), plus a small tile cache that
// fetches only what the view asks for and forgets what it no longer needs.

import { api } from '../api'
import type { SeriesRef } from './types'

const enc = encodeURIComponent

export interface SlideLevel {
  index: number
  width: number
  height: number
  tile_width: number
  tile_height: number
  tiles_across: number
  tiles_down: number
  downsample: number
  /** [row spacing, column spacing] in mm per pixel of this level, when the scanner said. */
  pixel_spacing_mm: [number, number] | null
  focal_planes: number
}

export interface SlideAssociated {
  kind: 'LABEL' | 'OVERVIEW' | 'THUMBNAIL' | string
  instance_uid: string
  width: number
  height: number
}

export interface Pyramid {
  series_uid: string
  /** Level 0 is the finest. */
  levels: SlideLevel[]
  associated: SlideAssociated[]
}

export function slidePath(s: SeriesRef): string {
  return `/api/v1/slides/${enc(s.study_uid)}/${enc(s.series_uid)}`
}

export function tileUrl(s: SeriesRef, level: number, column: number, row: number): string {
  return `${slidePath(s)}/tiles/${level}/${column}/${row}`
}

export async function getPyramid(s: SeriesRef, signal?: AbortSignal): Promise<Pyramid> {
  const pyramid = await api.get<Pyramid>(slidePath(s), undefined, signal)
  // Finest first, whatever order the server gave.
  pyramid.levels.sort((a, b) => (a.width === b.width ? a.index - b.index : b.width - a.width))
  return pyramid
}

// -- the view ------------------------------------------------------------------------------------

/** Where the view stands: `scale` canvas pixels per level-0 pixel; (x, y) the level-0 point at the canvas's top left. */
export interface View {
  scale: number
  x: number
  y: number
}

/** A level's size against level 0, per axis (from the sizes: downsample may be rounded). */
export function factors(base: SlideLevel, level: SlideLevel): { fx: number; fy: number } {
  return { fx: base.width / level.width, fy: base.height / level.height }
}

/**
 * The level to draw at `scale`: the coarsest whose pixels are still no larger than a canvas
 * pixel (so nothing is drawn blurrier than the screen can show); level 0 when zoomed past it.
 */
export function pickLevel(levels: SlideLevel[], scale: number): number {
  const base = levels[0]
  if (!base) return 0
  let best = 0
  let bestFactor = 1
  for (let i = 1; i < levels.length; i++) {
    const level = levels[i]
    if (!level) continue
    const f = factors(base, level).fx
    // 1.05: a level a hair too coarse (rounding of the sizes) still counts.
    if (f * scale <= 1.05 && f > bestFactor) {
      best = i
      bestFactor = f
    }
  }
  return best
}

export interface TileSpot {
  level: number
  column: number
  row: number
  /** Canvas rectangle, whole pixels, so that neighbours meet without a seam. */
  dx: number
  dy: number
  dw: number
  dh: number
}

/** The tiles of level `li` that the canvas (w × h) shows. */
export function visibleTiles(levels: SlideLevel[], li: number, view: View, w: number, h: number): TileSpot[] {
  const base = levels[0]
  const level = levels[li]
  if (!base || !level) return []
  const { fx, fy } = factors(base, level)
  // The view's rectangle in this level's pixels.
  const x0 = view.x / fx
  const y0 = view.y / fy
  const x1 = (view.x + w / view.scale) / fx
  const y1 = (view.y + h / view.scale) / fy
  const c0 = Math.max(0, Math.floor(x0 / level.tile_width))
  const r0 = Math.max(0, Math.floor(y0 / level.tile_height))
  const c1 = Math.min(level.tiles_across - 1, Math.floor((x1 - 1e-6) / level.tile_width))
  const r1 = Math.min(level.tiles_down - 1, Math.floor((y1 - 1e-6) / level.tile_height))
  const out: TileSpot[] = []
  const sx = fx * view.scale
  const sy = fy * view.scale
  for (let row = r0; row <= r1; row++) {
    for (let column = c0; column <= c1; column++) {
      const left = Math.round((column * level.tile_width - x0) * sx)
      const top = Math.round((row * level.tile_height - y0) * sy)
      const right = Math.round((Math.min(level.width, (column + 1) * level.tile_width) - x0) * sx)
      const bottom = Math.round((Math.min(level.height, (row + 1) * level.tile_height) - y0) * sy)
      out.push({ level: li, column, row, dx: left, dy: top, dw: right - left, dh: bottom - top })
    }
  }
  return out
}

/** Zoom by `factor` keeping the level-0 point under canvas point (px, py) where it is. */
export function zoomAt(view: View, factor: number, px: number, py: number, min: number, max: number): View {
  const scale = Math.min(max, Math.max(min, view.scale * factor))
  const ax = view.x + px / view.scale
  const ay = view.y + py / view.scale
  return { scale, x: ax - px / scale, y: ay - py / scale }
}

/** The whole slide centred in the canvas, with a small margin. */
export function fitView(base: SlideLevel, w: number, h: number): View {
  const scale = Math.min(w / base.width, h / base.height) * 0.96
  return { scale, x: (base.width - w / scale) / 2, y: (base.height - h / scale) / 2 }
}

/**
 * A scale bar of a round length (1, 2 or 5 × 10ⁿ µm) no longer than `maxPx` screen pixels, given
 * the size of one screen pixel in mm; null when the slide has no pixel spacing.
 */
export function scaleBar(mmPerPx: number | null, maxPx: number): { px: number; um: number } | null {
  if (!mmPerPx || !Number.isFinite(mmPerPx) || mmPerPx <= 0) return null
  const maxUm = maxPx * mmPerPx * 1000
  const exp = Math.floor(Math.log10(maxUm))
  let um = 10 ** exp
  for (const step of [5, 2, 1]) {
    if (step * 10 ** exp <= maxUm) {
      um = step * 10 ** exp
      break
    }
  }
  return { px: um / (mmPerPx * 1000), um }
}

/** 500 µm, 2 mm, 0.5 µm. */
export function lengthText(um: number): string {
  if (um >= 1000) return `${+(um / 1000).toPrecision(3)} mm`
  return `${+um.toPrecision(3)} µm`
}

// -- tiles -----------------------------------------------------------------------------------------

type TileEntry =
  | { state: 'loading'; controller: AbortController }
  | { state: 'ready'; bitmap: ImageBitmap }
  | { state: 'missing' }
  | { state: 'failed'; at: number }

/**
 * Tiles by level/column/row: fetched when asked for, kept up to `capacity` (least recently used
 * go first, never one on screen), a 404 remembered as a tile the slide does not have. A fetch
 * still running for a tile that left the screen is aborted.
 */
export class TileCache {
  private entries = new Map<string, TileEntry>()
  private inFlight = 0
  /** Calls back when a tile arrives (or turns out missing) so that the view draws again. */
  onChange: (() => void) | null = null

  constructor(
    private readonly series: SeriesRef,
    private readonly capacity = 192,
    private readonly parallel = 6,
  ) {}

  private key(level: number, column: number, row: number): string {
    return `${level}/${column}/${row}`
  }

  /** A ready tile's bitmap, 'missing' for a tile the slide has not, else null (not yet). */
  get(level: number, column: number, row: number): ImageBitmap | 'missing' | null {
    const key = this.key(level, column, row)
    const entry = this.entries.get(key)
    if (!entry) return null
    if (entry.state === 'ready') {
      // Most recently used last.
      this.entries.delete(key)
      this.entries.set(key, entry)
      return entry.bitmap
    }
    return entry.state === 'missing' ? 'missing' : null
  }

  /** How many of `spots` are not drawn yet (loading, or waiting their turn). */
  pending(spots: TileSpot[]): number {
    let n = 0
    for (const s of spots) {
      const entry = this.entries.get(this.key(s.level, s.column, s.row))
      if (!entry || entry.state === 'loading' || (entry.state === 'failed' && Date.now() - entry.at > 5000)) n++
    }
    return n
  }

  /** Fetch what `wanted` needs (in order, a few at a time); abort fetches for anything else. */
  want(wanted: TileSpot[]): void {
    const keys = new Set(wanted.map((s) => this.key(s.level, s.column, s.row)))
    for (const [key, entry] of this.entries) {
      if (entry.state === 'loading' && !keys.has(key)) {
        entry.controller.abort()
        this.entries.delete(key)
      }
    }
    for (const spot of wanted) {
      if (this.inFlight >= this.parallel) break
      const key = this.key(spot.level, spot.column, spot.row)
      const entry = this.entries.get(key)
      if (entry && !(entry.state === 'failed' && Date.now() - entry.at > 5000)) continue
      void this.fetch(key, spot)
    }
    this.evict(keys)
  }

  private async fetch(key: string, spot: TileSpot): Promise<void> {
    const controller = new AbortController()
    this.entries.set(key, { state: 'loading', controller })
    this.inFlight++
    let next: TileEntry
    try {
      const response = await fetch(tileUrl(this.series, spot.level, spot.column, spot.row), {
        credentials: 'same-origin',
        signal: controller.signal,
      })
      if (response.status === 404) next = { state: 'missing' }
      else if (!response.ok) next = { state: 'failed', at: Date.now() }
      else next = { state: 'ready', bitmap: await createImageBitmap(await response.blob()) }
    } catch {
      next = { state: 'failed', at: Date.now() }
    } finally {
      this.inFlight--
    }
    if (controller.signal.aborted || this.entries.get(key)?.state !== 'loading') {
      if (next.state === 'ready') next.bitmap.close()
    } else {
      this.entries.set(key, next)
    }
    this.onChange?.()
  }

  private evict(keep: Set<string>): void {
    if (this.entries.size <= this.capacity) return
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.capacity) break
      if (keep.has(key) || entry.state === 'loading') continue
      if (entry.state === 'ready') entry.bitmap.close()
      this.entries.delete(key)
    }
  }

  clear(): void {
    for (const entry of this.entries.values()) {
      if (entry.state === 'loading') entry.controller.abort()
      if (entry.state === 'ready') entry.bitmap.close()
    }
    this.entries.clear()
    this.onChange = null
  }
}
