// Xen Orchestra's client libraries ship without type declarations.
declare module '@xen-orchestra/xapi'
declare module 'xen-api'
