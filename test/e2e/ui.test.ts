// The web UI end to end: Debian's Chromium driven by playwright-core against a real daemon.
// Log in, see the dashboard, create a VM with the wizard (every option it offers), start it, see
// its console draw, snapshot and revert it, shut it down,
// delete it; changes made through the API from outside show without a reload; while idle the
// page only calls event.from. FLOTILLA_UI_SCREENSHOTS=1 also writes docs/ui-*.png.
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { get as httpsGet } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { call, Daemon, login, PASSWORD, ROOT, waitFor } from '../helpers/daemon.js'

const CHROMIUM = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
const SHOTS = process.env.FLOTILLA_UI_SCREENSHOTS === '1'

const daemon = new Daemon({ requestLog: true })
let context: BrowserContext | undefined
let page: Page
let userDataDir = ''
let session: string
let outsideVm: string
const problems: string[] = []
const timings: Record<string, number> = {}

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const shot = async (name: string) => void (SHOTS && (await page.screenshot({ path: join(ROOT, 'docs', `ui-${name}.png`) })))
const powerState = () => page.locator('.title-row [data-testid=power-state]')

describe('web UI', { timeout: 180_000 }, () => {
  before(async () => {
    // The set-up installs Chromium and builds the UI: their absence is a failure, not a skip.
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/setup.sh installs chromium`)
    assert.ok(existsSync(join(ROOT, 'web', 'dist', 'index.html')), 'web/dist is missing: npm run build makes it')
    await daemon.start()
    session = await login(daemon.url)
    // A VM made from outside before the page opens, and an ISO library the wizard can offer.
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    outsideVm = await c<string>('VM.clone', template, 'made outside')
    await c('VM.provision', outsideVm)
    await c('VM.set_is_a_template', outsideVm, false)
    const [host] = await c<string[]>('host.get_all')
    const isoSr = await c<string>('SR.create', host, {}, 0, 'ISO library', 'ISOs for the test', 'iso', 'iso', false, {})
    await c('VDI.create', { name_label: 'tools.iso', name_description: '', SR: isoSr, virtual_size: 1 << 20, type: 'user', sharable: false, read_only: true, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [] })
    userDataDir = mkdtempSync(join(tmpdir(), 'flotilla-chromium-'))
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 800 }, acceptDownloads: false })
    page = context.pages()[0] ?? (await context.newPage())
    page.setDefaultTimeout(30_000)
    page.on('console', (m) => void (m.type() === 'error' && problems.push(`console: ${m.text()}`)))
    page.on('pageerror', (e) => void problems.push(`page error: ${e.message}`))
  })

  after(async () => {
    await context?.close().catch(() => undefined)
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true })
    await daemon.dispose()
    console.log(`# UI timings (ms): ${JSON.stringify(timings)}`)
  })

  it('serves the built UI over HTTP and HTTPS, with content types and cache headers', async () => {
    const https = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) =>
      httpsGet(`${daemon.httpsUrl}/`, { rejectUnauthorized: false }, (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }))
      }).on('error', reject),
    )
    assert.equal(https.status, 200)
    assert.match(https.type, /^text\/html/)
    const index = await fetch(`${daemon.url}/`)
    assert.equal(index.headers.get('cache-control'), 'no-cache')
    const html = await index.text()
    assert.equal(html, https.body)
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!
    const asset = await fetch(`${daemon.url}${script}`)
    assert.equal(asset.status, 200)
    assert.match(asset.headers.get('content-type')!, /^text\/javascript/)
    assert.match(asset.headers.get('cache-control')!, /immutable/)
    const again = await fetch(`${daemon.url}${script}`, { headers: { 'if-none-match': asset.headers.get('etag')! } })
    assert.equal(again.status, 304)
    assert.equal((await fetch(`${daemon.url}/assets/nothing.js`)).status, 404)
  })

  it('logs in (wrong password in words, then Enter) and shows hosts and VMs without a click', async () => {
    let t0 = Date.now()
    await page.goto(daemon.url)
    const password = page.getByLabel('Password')
    await password.waitFor()
    timings.loginFormInteractive = Date.now() - t0
    assert.equal(await page.getByLabel('User').inputValue(), 'root')
    await shot('login')
    await password.fill('not the password')
    await password.press('Enter')
    assert.match(await page.getByTestId('login-error').innerText(), /Wrong user name or password.*SESSION_AUTHENTICATION_FAILED/)
    await password.fill(PASSWORD)
    t0 = Date.now()
    await password.press('Enter')
    await page.getByTestId('dashboard-vm').filter({ hasText: 'made outside' }).waitFor()
    timings.dashboardAfterLogin = Date.now() - t0
    const hostName = await c<string>('host.get_name_label', (await c<string[]>('host.get_all'))[0])
    assert.equal(await page.getByTestId('host-name').first().innerText(), hostName)
    assert.match(await page.getByTestId('dashboard-vm').filter({ hasText: 'made outside' }).innerText(), /Halted/)
    assert.match(await page.locator('.tree').innerText(), /made outside[\s\S]*Local storage/)
  })

  it('shows changes made through the API from outside without a reload', async () => {
    await c('VM.set_name_label', outsideVm, 'renamed outside')
    await page.locator('.tree').getByText('renamed outside').waitFor()
    await page.getByRole('link', { name: 'VMs', exact: true }).click()
    await page.getByTestId('vm-row').filter({ hasText: 'renamed outside' }).waitFor()
    await page.getByLabel('Filter VMs').fill('nothing like this')
    assert.equal(await page.getByTestId('vm-row').count(), 0)
    await page.getByLabel('Filter VMs').fill('renamed')
    assert.equal(await page.getByTestId('vm-row').count(), 1)
    await page.getByLabel('Filter VMs').fill('')
  })

  it('shows the pool: each host with its address, state, memory and VMs, the master marked; starts a halted VM on a picked host', async () => {
    await page.getByRole('link', { name: 'Dashboard', exact: true }).click()
    const [host] = await c<string[]>('host.get_all')
    const rec = await c('host.get_record', host)
    const row = page.getByTestId('host-row').filter({ hasText: rec.name_label })
    await row.waitFor()
    assert.equal(await page.getByTestId('host-row').count(), 1, 'a standalone host is a pool of one')
    assert.equal(await row.getByTestId('master-badge').innerText(), 'master')
    assert.equal(await row.getByTestId('host-address').innerText(), rec.address)
    assert.equal(await row.getByTestId('host-live').innerText(), 'Live')
    assert.equal(await row.getByTestId('host-enabled').innerText(), 'Enabled')
    assert.match((await row.getByTestId('host-memory').innerText()).trim(), /^[\d.]+ \w+ \/ [\d.]+ \w+$/)
    assert.match(await page.locator('.tree').innerText(), new RegExp(`${rec.name_label} \\(master\\)`))
    await c('host.disable', host)
    await waitFor('Disabled on the page', async () => (await row.getByTestId('host-enabled').innerText()) === 'Disabled')
    await c('host.enable', host)
    await waitFor('Enabled again', async () => (await row.getByTestId('host-enabled').innerText()) === 'Enabled')

    await page.getByTestId('dashboard-vm').getByRole('link', { name: 'renamed outside' }).click()
    await page.locator('[data-action=start_on]').click()
    const dialog = page.locator('dialog')
    await dialog.locator('select').selectOption({ label: `${rec.name_label} (master)` })
    await dialog.getByRole('button', { name: 'Start' }).click()
    await waitFor('Running on the page', async () => (await powerState().innerText()) === 'Running', 60_000)
    assert.equal(await c('VM.get_resident_on', outsideVm), host)
    assert.ok(daemon.requests().includes('POST /jsonrpc Async.VM.start_on'), 'started with VM.start_on')
    await page.getByRole('link', { name: 'Dashboard', exact: true }).click()
    await row.getByTestId('host-vms').getByRole('link', { name: 'renamed outside' }).waitFor()
    await c('VM.hard_shutdown', outsideVm)
    await waitFor('no VM on the host', async () => (await row.getByTestId('host-vms').innerText()) === 'none', 60_000)
  })

  it('shows a member that is not live and disabled as such, and offers only live, enabled hosts to Start on…', async () => {
    // A second host put into the page's first event.from answer: the page shows what the pool database says.
    await page.route('**/jsonrpc', async (route) => {
      const body = route.request().postDataJSON() as { method: string; params: unknown[] }
      if (body.method !== 'event.from' || body.params[2] !== '') return route.continue()
      const response = await route.fetch()
      const reply = await response.json()
      reply.result.events.push(
        { class: 'host', operation: 'add', ref: 'OpaqueRef:member', snapshot: { uuid: 'member-uuid', name_label: 'member two', address: '192.0.2.2', enabled: false, metrics: 'OpaqueRef:member-metrics' } },
        { class: 'host_metrics', operation: 'add', ref: 'OpaqueRef:member-metrics', snapshot: { live: false, memory_total: 8 * 2 ** 30, memory_free: 6 * 2 ** 30 } },
      )
      await route.fulfill({ response, json: reply })
    })
    await page.reload()
    const row = page.getByTestId('host-row').filter({ hasText: 'member two' })
    await row.waitFor()
    assert.equal(await page.getByTestId('host-row').count(), 2)
    assert.equal(await row.getByTestId('master-badge').count(), 0)
    assert.equal(await page.getByTestId('master-badge').count(), 1)
    assert.equal(await row.getByTestId('host-address').innerText(), '192.0.2.2')
    assert.equal(await row.getByTestId('host-live').innerText(), 'Not live')
    assert.equal(await row.getByTestId('host-enabled').innerText(), 'Disabled')
    assert.equal((await row.getByTestId('host-memory').innerText()).trim(), '2.00 GiB / 8.00 GiB')
    const masterName = await c<string>('host.get_name_label', (await c<string[]>('host.get_all'))[0])
    await page.getByTestId('dashboard-vm').getByRole('link', { name: 'renamed outside' }).click()
    await page.locator('[data-action=start_on]').click()
    assert.deepEqual(await page.locator('dialog option').allInnerTexts(), [`${masterName} (master)`])
    await page.locator('dialog').getByRole('button', { name: 'Cancel' }).click()
    await page.unroute('**/jsonrpc')
    await page.reload()
    await page.locator('[data-action=start_on]').waitFor()
  })

  it('creates a VM with the wizard, using each of its options, and starts it', async () => {
    await page.getByRole('link', { name: 'New VM' }).first().click()
    const form = page.locator('form.wizard')
    await form.locator('select[name=template]').selectOption({ label: 'Flotilla test guest' })
    await form.locator('input[name=name]').fill('ui vm')
    await form.locator('input[name=description]').fill('made in the browser')
    await form.locator('input[name=vcpus]').fill('2')
    await form.locator('input[name=memory]').fill('320')
    await form.locator('select[name=firmware]').selectOption('uefi')
    await form.locator('select[name=order]').selectOption('cdn')
    await form.getByRole('button', { name: 'Add a disk' }).click()
    await form.getByTestId('wizard-disk').locator('input').fill('0.5')
    if ((await form.getByTestId('wizard-vif').count()) === 0) await form.getByRole('button', { name: 'Add an interface' }).click()
    assert.equal(await form.getByTestId('wizard-vif').count(), 1)
    await form.locator('select[name=cd]').selectOption({ label: 'ISO: tools.iso' })
    assert.equal(await form.locator('input[name=start]').isChecked(), true)
    await shot('new-vm')
    await form.getByRole('button', { name: 'Create VM' }).click()
    await page.getByTestId('vm-name').filter({ hasText: 'ui vm' }).waitFor({ timeout: 90_000 })
    await waitFor('Running on the page', async () => (await powerState().innerText()) === 'Running', 60_000)
    const [ref] = await c<string[]>('VM.get_by_name_label', 'ui vm')
    const rec = await c('VM.get_record', ref)
    assert.equal(rec.power_state, 'Running')
    assert.equal(rec.name_description, 'made in the browser')
    assert.equal(rec.VCPUs_at_startup, 2)
    assert.equal(rec.memory_static_max, 320 * 1024 * 1024)
    assert.deepEqual([rec.HVM_boot_params.firmware, rec.HVM_boot_params.order], ['uefi', 'cdn'])
    assert.equal(rec.VIFs.length, 1)
    const vbds = await Promise.all(rec.VBDs.map((b: string) => c('VBD.get_record', b)))
    assert.deepEqual(vbds.map((b) => b.type).sort(), ['CD', 'Disk', 'Disk'])
    assert.equal(vbds.find((b) => b.type === 'CD').empty, false, 'the ISO is in the CD drive')
  })

  it('draws the console of the running VM', async () => {
    await page.getByRole('link', { name: 'Console' }).click()
    await waitFor('the console connected', async () => (await page.getByTestId('console-status').innerText()) === 'Connected', 30_000)
    const canvas = page.getByTestId('console').locator('canvas')
    // The firmware draws on the framebuffer: wait for a pixel that is not black.
    const drawn = await waitFor(
      'a drawn console',
      () =>
        canvas.evaluate((el: any) => {
          const { width, height } = el
          if (!width || !height) return false
          const data: Uint8ClampedArray = el.getContext('2d').getImageData(0, 0, width, height).data
          for (let i = 0; i < data.length; i += 4) if (data[i] || data[i + 1] || data[i + 2]) return `${width}x${height}`
          return false
        }),
      60_000,
    )
    assert.match(drawn, /^\d+x\d+$/)
    if (SHOTS) await page.waitForTimeout(3000)
    await shot('vm-console')
    if (SHOTS) await page.goto(`${daemon.url}/#/`), await shot('dashboard'), await page.goBack()
    for (const [tab, rows, testid] of [['Disks', 3, 'vbd-row'], ['Network', 1, 'vif-row']] as const) {
      await page.getByRole('link', { name: tab, exact: true }).click()
      // The tab fetches its rows after the click: wait for the last one before counting.
      await page.getByTestId(testid).nth(rows - 1).waitFor({ timeout: 15_000 })
      assert.equal(await page.getByTestId(testid).count(), rows, `${tab} rows`)
    }
    await shot('vm-disks')
    await page.getByRole('link', { name: 'Settings', exact: true }).click()
    assert.equal(await page.locator('form.settings input[type=number]').first().inputValue(), '2')
  })

  it('takes a snapshot and reverts to it', async () => {
    await page.getByRole('link', { name: 'Snapshots', exact: true }).click()
    await page.getByRole('button', { name: 'Take snapshot' }).click()
    await page.locator('dialog input').fill('before revert')
    await page.locator('dialog input').press('Enter')
    await page.getByTestId('snapshot-row').filter({ hasText: 'before revert' }).waitFor({ timeout: 60_000 })
    await page.getByTestId('snapshot-row').getByRole('button', { name: 'Revert' }).click()
    await page.locator('dialog').getByRole('button', { name: 'Revert' }).click()
    // A snapshot (without memory) reverts to a halted VM.
    await waitFor('Halted after revert', async () => (await powerState().innerText()) === 'Halted', 60_000)
    await page.getByRole('button', { name: 'Start', exact: true }).click()
    await waitFor('Running again', async () => (await powerState().innerText()) === 'Running', 60_000)
  })

  it('shuts the VM down and deletes it (confirmed with the keyboard)', async () => {
    await page.locator('[data-action=shutdown]').click()
    await waitFor('Halted on the page', async () => (await powerState().innerText()) === 'Halted', 90_000)
    await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Delete', exact: true }).click()
    const dialog = page.locator('dialog')
    assert.match(await dialog.innerText(), /ui vm and its disks and snapshots will be deleted/)
    await page.keyboard.press('Enter')
    await page.waitForURL(/#\/vms$/)
    await waitFor('the VM gone from the list', async () => (await page.getByTestId('vm-row').filter({ hasText: 'ui vm' }).count()) === 0)
    assert.deepEqual(await c('VM.get_by_name_label', 'ui vm'), [])
  })

  it('shows the SR page and the tasks page, and fits a narrow window', async () => {
    await page.locator('.tree').getByRole('link', { name: /Local storage/ }).click()
    await page.getByRole('heading', { name: 'Local storage' }).waitFor()
    await page.getByTestId('vdi-row').first().waitFor({ timeout: 15_000 })
    await shot('sr')
    await page.getByRole('link', { name: 'Tasks', exact: true }).click()
    await page.locator('table.tasks tbody tr').first().waitFor()
    assert.match(await page.locator('table.tasks').innerText(), /Async\.VM\.clone/)
    await shot('tasks')
    await page.setViewportSize({ width: 400, height: 800 })
    await page.getByRole('button', { name: 'Menu' }).click()
    await page.locator('#sidebar').getByRole('link', { name: 'VMs', exact: true }).click()
    await page.getByTestId('vm-row').filter({ hasText: 'renamed outside' }).waitFor()
    const overflow = await page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth')
    assert.ok(Number(overflow) <= 1, `the page scrolls sideways by ${overflow}px at 400px`)
    await shot('narrow')
    await page.setViewportSize({ width: 1280, height: 800 })
    await page.getByRole('link', { name: 'VMs', exact: true }).click()
    await shot('vms')
  })

  it('only calls event.from while idle, and logged no console errors', async () => {
    await page.goto(`${daemon.url}/#/`)
    await page.getByTestId('dashboard-vm').first().waitFor()
    await new Promise((r) => setTimeout(r, 1500))
    const mark = daemon.requests().length
    await new Promise((r) => setTimeout(r, 4000))
    // One change from outside (the test's own call, discounted) wakes the page's long-poll.
    await c('VM.set_name_description', outsideVm, 'changed while idle')
    await page.getByTestId('dashboard-vm').getByRole('link', { name: 'renamed outside' }).click()
    await page.getByText('changed while idle').waitFor()
    await page.goBack()
    await new Promise((r) => setTimeout(r, 3000))
    const lines = daemon.requests().slice(mark)
    const own = lines.indexOf('POST /jsonrpc VM.set_name_description')
    assert.ok(own >= 0)
    lines.splice(own, 1)
    assert.ok(lines.length >= 1, 'the page called event.from')
    assert.deepEqual([...new Set(lines)], ['POST /jsonrpc event.from'])
    assert.deepEqual(problems, [])
  })

  it('sends the browser from a pool member to its master, keeping the scheme and port of the page', async () => {
    // The daemon plays both: the member at 127.0.0.1 (its login answered HOST_IS_SLAVE here), the master at localhost.
    await page.goto(daemon.url)
    await page.getByRole('button', { name: 'Log out' }).click()
    await page.route('**/jsonrpc', async (route) => {
      const body = route.request().postDataJSON() as { method: string; id: number }
      if (body.method !== 'session.login_with_password') return route.continue()
      await route.fulfill({ contentType: 'application/json', body: JSON.stringify({ jsonrpc: '2.0', id: body.id, error: { code: 1, message: 'HOST_IS_SLAVE', data: ['localhost'] } }) })
    })
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByLabel('Password').press('Enter')
    await page.waitForURL(`http://localhost:${daemon.httpPort}/?from_member=127.0.0.1`)
    await page.unroute('**/jsonrpc')
    assert.match(await page.getByTestId('from-member').innerText(), /^127\.0\.0\.1 is a member of this pool: the pool is managed here, on its master\.$/)
    await page.getByLabel('Password').fill(PASSWORD)
    await page.getByLabel('Password').press('Enter')
    await page.getByTestId('host-row').first().waitFor()
  })
})
