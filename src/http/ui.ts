// The web UI: the files `vite build` makes of web/ (web/dist), served by GET and HEAD at `/`
// (index.html) and their own paths. Hashed assets (/assets/*) are cached for good; the rest is
// revalidated. The file list is read at start-up: a daemon serves the build it started with.
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { extname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { HttpRoute } from './server.js'

/** Where the build lands (this file runs as dist/src/http/ui.js). */
export const UI_DIR = fileURLToPath(new URL('../../../web/dist/', import.meta.url))

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* walk(path)
    else if (entry.isFile()) yield path
  }
}

function serveFile(file: string, immutable: boolean) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' })
      return void res.end('method not allowed\n')
    }
    let size: number, mtime: Date
    try {
      ;({ size, mtime } = statSync(file))
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' })
      return void res.end('not found (the web UI was rebuilt: reload the page)\n')
    }
    const etag = `"${size.toString(16)}-${mtime.getTime().toString(16)}"`
    const headers = {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      etag,
      'last-modified': mtime.toUTCString(),
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    }
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers)
      return void res.end()
    }
    res.writeHead(200, { ...headers, 'content-length': size })
    if (req.method === 'HEAD') return void res.end()
    createReadStream(file).on('error', () => res.destroy()).pipe(res)
  }
}

/** A route per file of the built UI, and `/` for its index.html; none if the UI is not built. */
export function uiRoutes(dir = UI_DIR): Map<string, HttpRoute> {
  const routes = new Map<string, HttpRoute>()
  if (!existsSync(join(dir, 'index.html'))) return routes
  for (const file of walk(dir)) {
    const path = `/${relative(dir, file).split(sep).join('/')}`
    const route: HttpRoute = { request: serveFile(file, path.startsWith('/assets/')) }
    routes.set(path, route)
    if (path === '/index.html') routes.set('/', route)
  }
  return routes
}
