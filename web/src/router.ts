// Hash routes (#/vms, #/vm/<uuid>/console, …): the daemon serves one page, no server-side routes.
import { reactive } from 'vue'

export const route = reactive({ parts: [] as string[] })

const read = () => (route.parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent))
window.addEventListener('hashchange', read)
read()

export const href = (...parts: string[]) => `#/${parts.map(encodeURIComponent).join('/')}`
export const go = (...parts: string[]) => void (location.hash = href(...parts))
