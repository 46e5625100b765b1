declare module '*.vue' {
  import type { DefineComponent } from 'vue'
  const component: DefineComponent<object, object, unknown>
  export default component
}
declare module '@novnc/novnc' {
  export default class RFB extends EventTarget {
    constructor(target: HTMLElement, url: string, options?: { wsProtocols?: string[]; shared?: boolean; credentials?: Record<string, string> })
    scaleViewport: boolean
    resizeSession: boolean
    focusOnClick: boolean
    viewOnly: boolean
    disconnect(): void
    sendCtrlAltDel(): void
    focus(): void
  }
}
