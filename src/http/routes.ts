// The daemon's bulk HTTP handlers, by path.
import type { Services } from '../xapi/context.js'
import type { HttpRoute } from './server.js'
import { consoleRoute } from './console.js'

export function bulkRoutes(svc: Services): Map<string, HttpRoute> {
  const routes = new Map<string, HttpRoute>()
  routes.set('/console', consoleRoute(svc))
  return routes
}
