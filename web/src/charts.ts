// ECharts, imported piece by piece (core, the SVG renderer, bar and scatter charts, axes,
// tooltip, legend, ARIA descriptions) for the supervisor's dashboard only: the dashboard route
// is lazy, so no other page loads any of it. SVG draws crisply at any zoom and needs no fonts
// or tiles from anywhere: the text uses the page's own system font stack.
import { use } from 'echarts/core'
import { SVGRenderer } from 'echarts/renderers'
import { BarChart, ScatterChart } from 'echarts/charts'
import { AriaComponent, GridComponent, LegendPlainComponent, TooltipComponent } from 'echarts/components'
import type { CentreCode } from './types'

use([SVGRenderer, BarChart, ScatterChart, AriaComponent, GridComponent, LegendPlainComponent, TooltipComponent])

export { default as VChart } from 'vue-echarts'

/** One colour per centre, the same in every chart. */
export const CENTRE_COLOURS: Record<CentreCode, string> = {
  ecg: '#c0342c',
  imaging: '#1f6f8b',
  consultation: '#2e7d32',
  lab: '#b7791f',
  pathology: '#6a4c93',
}

export const FONT_FAMILY =
  "-apple-system, 'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC', 'Source Han Sans SC', 'Helvetica Neue', Arial, sans-serif"
