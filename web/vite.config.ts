// Builds the web UI (web/dist), served by the daemon at `/` (src/http/ui.ts).
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  plugins: [vue()],
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 1000 },
  // `npx vite web` serves the UI with hot reload against a daemon on FLOTILLA_URL (default http://127.0.0.1).
  server: {
    proxy: Object.fromEntries(['/jsonrpc', '/console', '/export', '/import', '/import_raw_vdi'].map((p) => [p, { target: process.env.FLOTILLA_URL ?? 'http://127.0.0.1', ws: p === '/console', changeOrigin: true }])),
  },
})
