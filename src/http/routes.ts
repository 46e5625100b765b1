// The daemon's bulk HTTP handlers, by path.
import type { Services } from '../xapi/context.js'
import type { HttpRoute } from './server.js'
import { consoleRoute } from './console.js'
import { exportRawVdiRoute, importRawVdiRoute } from './raw-vdi.js'
import { exportXvaRoute, importXvaRoute } from './xva.js'
import { uiRoutes } from './ui.js'

export function bulkRoutes(svc: Services): Map<string, HttpRoute> {
  const routes = new Map<string, HttpRoute>()
  routes.set('/console', consoleRoute(svc))
  routes.set('/import_raw_vdi', importRawVdiRoute(svc))
  routes.set('/export_raw_vdi', exportRawVdiRoute(svc))
  routes.set('/export', exportXvaRoute(svc))
  routes.set('/import', importXvaRoute(svc))
  for (const [path, route] of uiRoutes()) routes.set(path, route)
  return routes
}
