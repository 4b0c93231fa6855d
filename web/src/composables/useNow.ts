import { onBeforeUnmount, onMounted, readonly, ref, type Ref } from 'vue'

// One clock for every countdown on the page, ticking once a second while anything shows one.
const now = ref(Date.now())
let users = 0
let timer: ReturnType<typeof setInterval> | null = null

export function useNow(): Readonly<Ref<number>> {
  onMounted(() => {
    users += 1
    if (timer === null) {
      now.value = Date.now()
      timer = setInterval(() => (now.value = Date.now()), 1000)
    }
  })
  onBeforeUnmount(() => {
    users -= 1
    if (users === 0 && timer !== null) {
      clearInterval(timer)
      timer = null
    }
  })
  return readonly(now)
}
