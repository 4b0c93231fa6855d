// Cornerstone3D behind one small interface. Imported dynamically by StackViewer.vue only, so the
// library (vtk.js, the loader, its decode worker and codecs) is its own chunk that other pages
// never load.
//
// Images come from our WADO-RS: each frame is a `wadors:` image id whose metadata (the series'
// DICOM JSON) is registered with the loader before the stack is shown; the loader fetches
// `.../frames/{n}` as multipart/related in the stored transfer syntax and decodes it in its web
// worker (codecs as WebAssembly, emitted by Vite into /assets/ with the build). Without WebGL (headless
// browsers, old village PCs) Cornerstone draws on the CPU into the same 2D canvas.

import {
  Enums,
  RenderingEngine,
  cache,
  eventTarget,
  imageLoader,
  init as initCore,
  utilities,
  type StackViewport,
  type Types,
} from '@cornerstonejs/core'
import {
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as initTools,
  utilities as toolUtilities,
} from '@cornerstonejs/tools'
import { init as initLoader, wadors } from '@cornerstonejs/dicom-image-loader'
import { framePath, type StackEntry, type Window } from './api'
import type { DicomJson, SeriesRef } from './types'

let ready = false

function setUp(): void {
  if (ready) return
  initCore()
  initLoader({ maxWebWorkers: 1 })
  initTools()
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) addTool(tool)
  // Keep the image cache modest: village PCs have little memory.
  cache.setMaxCacheSize(256 * 1024 * 1024)
  ready = true
}

export type LeftTool = 'wl' | 'pan' | 'zoom'

const TOOL_NAME: Record<LeftTool, string> = {
  wl: WindowLevelTool.toolName,
  pan: PanTool.toolName,
  zoom: ZoomTool.toolName,
}

export interface StackState {
  index: number
  count: number
  window: Window | null
}

export interface StackHandle {
  readonly count: number
  setIndex(index: number): Promise<void>
  setWindow(window: Window | null): void
  setLeftTool(tool: LeftTool): void
  /** Play the stack (multi-frame cine or a slice sweep) at `fps`; stop with stopCine. */
  playCine(fps: number): void
  stopCine(): void
  reset(): void
  destroy(): void
}

let serial = 0

/** The `wadors:` image id of one frame. Absolute URL: the loader requests exactly this. */
export function imageIdOf(series: SeriesRef, entry: StackEntry): string {
  return `wadors:${window.location.origin}${framePath(series, entry.instanceUid, entry.frame)}`
}

/** Show a series' frames in `element`; `onChange` hears the slice and the window as they move. */
export async function openStack(
  element: HTMLDivElement,
  series: SeriesRef,
  metadata: DicomJson[],
  entries: StackEntry[],
  onChange: (state: StackState) => void,
): Promise<StackHandle> {
  setUp()
  const byUid = new Map<string, DicomJson>()
  for (const ds of metadata) {
    const uid = ds['00080018']?.Value?.[0]
    if (typeof uid === 'string') byUid.set(uid, ds)
  }
  const imageIds: string[] = []
  for (const entry of entries) {
    const ds = byUid.get(entry.instanceUid)
    if (!ds) continue
    const imageId = imageIdOf(series, entry)
    // The loader reads a multi-frame instance's metadata under its first frame's id.
    if (entry.frame === 1) wadors.metaDataManager.add(imageId, ds as unknown as Parameters<typeof wadors.metaDataManager.add>[1])
    imageIds.push(imageId)
  }
  if (imageIds.length === 0) throw new Error('no frames')

  const n = ++serial
  const engine = new RenderingEngine(`hz-engine-${n}`)
  const viewportId = `hz-stack-${n}`
  engine.enableElement({ viewportId, type: Enums.ViewportType.STACK, element })
  const viewport = engine.getViewport(viewportId) as StackViewport

  const group = ToolGroupManager.createToolGroup(`hz-tools-${n}`)
  if (!group) throw new Error('tool group')
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) group.addTool(tool.toolName)
  group.addViewport(viewportId, engine.id)
  const { MouseBindings } = ToolEnums
  let left: LeftTool = 'wl'
  const bindLeft = (tool: LeftTool) => {
    // The left button drives the chosen tool; the others keep their own buttons.
    const others: Record<LeftTool, number> = {
      wl: MouseBindings.Primary,
      pan: MouseBindings.Auxiliary,
      zoom: MouseBindings.Secondary,
    }
    for (const t of Object.keys(TOOL_NAME) as LeftTool[]) group.setToolPassive(TOOL_NAME[t])
    for (const t of Object.keys(TOOL_NAME) as LeftTool[]) {
      if (t === tool) continue
      if (others[t] === MouseBindings.Primary) continue
      group.setToolActive(TOOL_NAME[t], { bindings: [{ mouseButton: others[t] }] })
    }
    group.setToolActive(TOOL_NAME[tool], { bindings: [{ mouseButton: MouseBindings.Primary }] })
    left = tool
  }
  bindLeft(left)
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] })

  const report = () => {
    const props = viewport.getProperties()
    const range = props.voiRange
    let windowNow: Window | null = null
    if (range) {
      const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(range.lower, range.upper)
      windowNow = { center: windowCenter, width: windowWidth }
    }
    onChange({ index: viewport.getCurrentImageIdIndex(), count: imageIds.length, window: windowNow })
  }
  const events = [Enums.Events.VOI_MODIFIED, Enums.Events.STACK_NEW_IMAGE, Enums.Events.IMAGE_RENDERED]
  for (const e of events) element.addEventListener(e, report)

  // The first frame decides what we show: wait for it so that a failure is the caller's to report.
  const firstId = imageIds[0] as string
  await imageLoader.loadAndCacheImage(firstId)
  await viewport.setStack(imageIds, 0)
  viewport.render()
  report()

  let cine = false
  return {
    count: imageIds.length,
    async setIndex(index: number) {
      const i = Math.max(0, Math.min(imageIds.length - 1, index))
      await viewport.setImageIdIndex(i)
    },
    setWindow(w: Window | null) {
      if (w) {
        const { lower, upper } = utilities.windowLevel.toLowHighRange(w.width, w.center)
        viewport.setProperties({ voiRange: { lower, upper } })
      } else {
        viewport.resetProperties()
      }
      viewport.render()
      report()
    },
    setLeftTool(tool: LeftTool) {
      if (tool !== left) bindLeft(tool)
    },
    playCine(fps: number) {
      toolUtilities.cine.playClip(element, { framesPerSecond: fps, loop: true })
      cine = true
    },
    stopCine() {
      if (cine) toolUtilities.cine.stopClip(element)
      cine = false
    },
    reset() {
      viewport.resetCamera()
      viewport.resetProperties()
      viewport.render()
      report()
    },
    destroy() {
      if (cine) toolUtilities.cine.stopClip(element)
      for (const e of events) element.removeEventListener(e, report)
      ToolGroupManager.destroyToolGroup(group.id)
      engine.destroy()
    },
  }
}

/** Cornerstone's own events (image load failures) reach the page through this. */
export function onImageLoadFailed(listener: (imageId: string) => void): () => void {
  const handler = (event: Event) => {
    const detail = (event as CustomEvent<{ imageId?: string }>).detail
    listener(detail?.imageId ?? '')
  }
  eventTarget.addEventListener(Enums.Events.IMAGE_LOAD_FAILED, handler)
  return () => eventTarget.removeEventListener(Enums.Events.IMAGE_LOAD_FAILED, handler)
}

export type { Types }
