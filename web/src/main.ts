import { createApp } from 'vue'
import App from './App.vue'
import { applyLocale, currentLocale, i18n } from './i18n'
import { router } from './router'
import './styles.css'
import { rememberDebugFlag } from './call/debug'

rememberDebugFlag()
applyLocale(currentLocale.value)

createApp(App).use(i18n).use(router).mount('#app')
