import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// The API server for `npm run dev` (see docs: `huizhen serve`).
const api = process.env.HUIZHEN_API ?? 'http://127.0.0.1:8097'

export default defineConfig({
  plugins: [
    vue(),
    // Element Plus components and their CSS are imported on demand, as templates use them.
    Components({
      dts: 'components.d.ts',
      dirs: [],
      resolvers: [ElementPlusResolver({ importStyle: 'css' })],
    }),
  ],
  // The DICOM loader's decode worker is an ES module with its own imports. (vtk.js's XML reader,
  // which Cornerstone's mesh cache imports, needs Node's EventEmitter: the `events` package is a
  // dependency so that it resolves to that instead of an empty browser stub.)
  worker: { format: 'es' },
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  define: {
    __VUE_OPTIONS_API__: 'true',
    __VUE_PROD_DEVTOOLS__: 'false',
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
    __VUE_I18N_FULL_INSTALL__: 'true',
    __VUE_I18N_LEGACY_API__: 'false',
    __INTLIFY_PROD_DEVTOOLS__: 'false',
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // Inline nothing: the CSP allows data: for images and fonts only; keep every asset a file.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 700,
    rolldownOptions: {
      output: {
        // Two long-cached vendor chunks (framework, UI kit) instead of dozens of tiny shared
        // ones: fewer round trips on slow village links; app code stays split by page. ECharts
        // (with zrender, tslib and vue-echarts) is a third, loaded by the dashboard page only.
        codeSplitting: {
          groups: [
            { name: 'charts', test: /node_modules[\\/](echarts|zrender|tslib|vue-echarts)[\\/]/, priority: 15 },
            // Cornerstone3D (with what it brings along: vtk.js, dcmjs, d3 pieces…), loaded by the
            // reading room only. Its decode worker and the codecs' WebAssembly are separate files
            // that Vite emits from the loader's `new URL(…, import.meta.url)`. One file (3.7 MB,
            // 1 MB gzipped, cached for a year) rather than dozens: it is over the size warning by
            // design.
            { name: 'cornerstone', test: /node_modules[\\/](@cornerstonejs|dicom-parser)[\\/]/, priority: 16 },
            { name: 'vue', test: /node_modules[\\/](@vue|vue|vue-router|vue-i18n|@intlify)[\\/]/, priority: 20 },
            { name: 'ui', test: /node_modules[\\/]/, priority: 10 },
          ],
        },
      },
    },
  },
  server: {
    host: '127.0.0.1',
    proxy: {
      '/api': { target: api, changeOrigin: false },
      '/dicomweb': { target: api, changeOrigin: false },
      '/socket.io': { target: api, ws: true },
    },
  },
})
