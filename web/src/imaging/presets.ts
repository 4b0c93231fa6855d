// Window presets for CT (Hounsfield units), as commonly taught.
import type { Window } from './api'

export type PresetName = 'default' | 'lung' | 'brain' | 'bone' | 'soft'

export const PRESETS: Record<Exclude<PresetName, 'default'>, Window> = {
  lung: { center: -600, width: 1500 },
  brain: { center: 40, width: 80 },
  bone: { center: 400, width: 1800 },
  soft: { center: 50, width: 400 },
}
