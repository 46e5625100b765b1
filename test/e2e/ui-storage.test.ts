// The web UI's "New SR" form against real storage servers: nfs-ganesha and a single-node Ceph
// cluster in a lab's storage namespace, a lab host's daemon, Debian's Chromium. Probe the server,
// pick its export (or pool), create the SR; its page shows the host with the SR plugged; the New
// VM wizard puts a VM's disks on it.
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { call, waitFor } from '../helpers/daemon.js'
import { Lab } from '../helpers/lab.js'
import { CephServer } from '../helpers/ceph-server.js'
import { NfsServer } from '../helpers/nfs-server.js'

const CHROMIUM = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

let lab: Lab
let nfs: NfsServer
let ceph: CephServer
let context: BrowserContext | undefined
let page: Page
let userDataDir = ''
const problems: string[] = []

describe('web UI: new shared SRs', { timeout: 180_000 }, () => {
  before(async () => {
    lab = await Lab.up(1)
    ;[nfs, ceph] = await Promise.all([NfsServer.start(lab), CephServer.start(lab)])
    userDataDir = mkdtempSync(join(tmpdir(), 'flotilla-chromium-'))
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 800 } })
    page = context.pages()[0] ?? (await context.newPage())
    page.setDefaultTimeout(30_000)
    page.on('pageerror', (e) => void problems.push(`page error: ${e.message}`))
  })

  after(async () => {
    await context?.close().catch(() => undefined)
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true })
    lab?.down()
  })

  it('probes the server, lists its export, creates the SR and shows it plugged on the host', async () => {
    await page.goto(lab.host(1).url)
    const password = page.getByLabel('Password')
    await password.fill(lab.password)
    await password.press('Enter')
    await page.getByRole('link', { name: 'New SR' }).click()
    await page.getByLabel('NFS server').fill(nfs.address)
    await page.getByRole('button', { name: 'Probe' }).click()
    const exportPicker = page.getByLabel('Export')
    await exportPicker.waitFor()
    assert.deepEqual(await exportPicker.locator('option').allInnerTexts(), [nfs.exportPath])
    await page.getByLabel('Name').fill('Shared NFS')
    await page.getByRole('button', { name: 'Create' }).click()
    await page.getByRole('heading', { name: 'Shared NFS' }).waitFor()
    assert.match(await page.locator('main').innerText(), /type nfs, user, shared/)
    const row = page.getByTestId('pbd-row')
    await row.filter({ hasText: 'plugged' }).waitFor()
    assert.match(await row.innerText(), new RegExp(`h1[\\s\\S]*${nfs.address}:${nfs.exportPath}[\\s\\S]*plugged`))
    // the SR is on the server, and the API says the same
    const s = await call<string>(lab.host(1).url, 'session.login_with_password', 'root', lab.password)
    const [sr] = await call<string[]>(lab.host(1).url, 'SR.get_by_name_label', s, 'Shared NFS')
    assert.deepEqual(readdirSync(nfs.exportPath), [await call<string>(lab.host(1).url, 'SR.get_uuid', s, sr)])
    assert.deepEqual(problems, [])
  })

  it('makes a Ceph RBD SR the same way: probe the cluster with a key, pick the pool', async () => {
    await page.getByRole('link', { name: 'New SR' }).click()
    const main = page.locator('main')
    await main.locator('select[name=type]').selectOption('rbd')
    await main.locator('input[name=monitors]').fill(ceph.monitors)
    await main.locator('input[name=user]').fill(ceph.user)
    await main.locator('input[name=key]').fill(ceph.key)
    await main.getByRole('button', { name: 'Probe' }).click()
    const pools = main.locator('select[name=place]')
    await pools.waitFor().catch(async (err: Error) => {
      throw new Error(`${err.message}; the page: ${await page.locator('body').innerText()}`)
    })
    assert.ok((await pools.locator('option').allInnerTexts()).includes(ceph.pool), `pools offered: ${JSON.stringify(await pools.locator('option').allInnerTexts())}; ${await page.locator('main').innerText()}`)
    await pools.selectOption(ceph.pool)
    await main.locator('input[name=name]').fill('Shared Ceph')
    await main.getByRole('button', { name: 'Create' }).click()
    await page.getByRole('heading', { name: 'Shared Ceph' }).waitFor()
    assert.match(await page.locator('main').innerText(), /type rbd, user, shared/)
    await page.getByTestId('pbd-row').filter({ hasText: 'plugged' }).waitFor()
    assert.ok(!(await page.locator('main').innerText()).includes(ceph.key), 'the page shows no key')
    // the key is kept in a secret that the PBD names, as xapi keeps SM passwords
    const s = await call<string>(lab.host(1).url, 'session.login_with_password', 'root', lab.password)
    const [sr] = await call<string[]>(lab.host(1).url, 'SR.get_by_name_label', s, 'Shared Ceph')
    const [pbd] = await call<string[]>(lab.host(1).url, 'SR.get_PBDs', s, sr)
    const config = await call<Record<string, string>>(lab.host(1).url, 'PBD.get_device_config', s, pbd)
    assert.deepEqual(Object.keys(config).sort(), ['key_secret', 'monitors', 'pool', 'user'])
    const secret = await call<string>(lab.host(1).url, 'secret.get_by_uuid', s, config.key_secret)
    assert.equal(await call<string>(lab.host(1).url, 'secret.get_value', s, secret), ceph.key)
    assert.deepEqual(problems, [])
  })

  it('installs a VM onto it with the New VM wizard and starts it', async () => {
    await page.getByRole('link', { name: 'New VM' }).first().click()
    const form = page.locator('form.wizard')
    await form.locator('select[name=template]').selectOption({ label: 'Flotilla test guest' })
    await form.locator('input[name=name]').fill('on nfs')
    await form.locator('select[name=sr]').selectOption({ label: 'Shared NFS (shared)' })
    await form.getByRole('button', { name: 'Create VM' }).click()
    await page.getByTestId('vm-name').filter({ hasText: 'on nfs' }).waitFor({ timeout: 120_000 })
    const s = await call<string>(lab.host(1).url, 'session.login_with_password', 'root', lab.password)
    const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)
    const [vm] = await c<string[]>('VM.get_by_name_label', 'on nfs')
    await waitFor('the VM to run', async () => (await c<string>('VM.get_power_state', vm)) === 'Running' || undefined, 90_000)
    const [sr] = await c<string[]>('SR.get_by_name_label', 'Shared NFS')
    const disks = await Promise.all((await c<string[]>('VM.get_VBDs', vm)).map(async (b) => c<string>('VDI.get_SR', await c<string>('VBD.get_VDI', b))))
    assert.deepEqual(disks, [sr])
    assert.deepEqual(problems, [])
  })
})
