// Ports for listeners that start later come from below the kernel's ephemeral range, where an
// outgoing connection cannot take them in the meantime.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { test } from 'node:test'
import { freePort } from '../../src/lib/ports.js'

test('freePort answers a port below the ephemeral range that a server can listen on', async () => {
  const ephemeral = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  for (let i = 0; i < 20; i++) {
    const port = await freePort()
    assert.ok(port >= 10_000 && port < ephemeral, `port ${port}`)
    const server = createServer()
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve))
    await new Promise((resolve) => server.close(resolve))
  }
})
