// The agent's day in a real browser: headless Debian Chromium driven by playwright-core, on
// the committed dist/agent-app.html opened from file://, against a real soko.
// tests/agent_app.rs starts soko, a NIP-46 bunker and this script; the merchant's side (USSD
// hops) and the checks of the relay are the Rust side's. The two talk by lines: this script
// prints `STEP <name> <json>` and, where the merchant must act, waits for `GO` on stdin.
//
// Environment: APP (the HTML file), RELAY, BOT (npub), BUNKER (bunker:// URI), INVITE,
// PHONE, SHOTS (the screenshot folder), CHROMIUM (default /usr/bin/chromium); MODE=connect
// runs only the login through the nostrconnect:// offer.
import { chromium } from 'playwright-core'
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createInterface } from 'node:readline'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set`)
  return v
}
const APP = env('APP')
const SHOTS = env('SHOTS')
const WAIT = 60_000

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
function step(name, data = {}) {
  process.stdout.write(`STEP ${name} ${JSON.stringify(data)}\n`)
}
async function go(name, data) {
  step(name, data)
  const { value, done } = await lines.next()
  if (done || value.trim() !== 'GO') throw new Error(`expected GO after ${name}, got ${value}`)
}

mkdirSync(SHOTS, { recursive: true })
const profile = mkdtempSync(join(tmpdir(), 'agent-app-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 360, height: 740 },
  locale: 'en-US',
})
const page = context.pages()[0] || (await context.newPage())
page.setDefaultTimeout(WAIT)
const pageErrors = []
page.on('pageerror', (e) => pageErrors.push(String(e)))
// The page's own warnings and errors (nostr-tools logs failed signer answers there):
// printed only when the day fails.
const consoleLines = []
page.on('console', (m) => {
  if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text()}`.slice(0, 500))
})
let shot = 0
async function snap(name) {
  shot += 1
  await page.screenshot({ path: join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true })
}
const byId = (id) => page.locator(`[id="${id}"]`)
function expect(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`)
}

try {
  const url = `${pathToFileURL(APP)}?relay=${encodeURIComponent(env('RELAY'))}&bot=${encodeURIComponent(env('BOT'))}`
  await page.goto(url)
  if (process.env.MODE === 'connect') await signerAppLogin()
  else await wholeDay()
  expect(pageErrors.length === 0, `no page errors: ${pageErrors.join('; ')}`)
} catch (e) {
  await snap('failure').catch(() => {})
  console.error(`e2e failed: ${e && e.stack ? e.stack : e}`)
  // What the agent saw, for a failure on a machine whose screenshots are out of reach.
  const seen = await page.locator('#app').innerText({ timeout: 2000 }).catch((err) => `(unreadable: ${err})`)
  console.error(`the page showed:\n${seen.slice(0, 3000)}`)
  if (consoleLines.length) console.error(`the page's console, last 40:\n${consoleLines.slice(-40).join('\n')}`)
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join('; ')}`)
  process.exitCode = 1
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
  process.stdin.destroy()
}

/** The nostrconnect:// offer taken by a signer app (the Rust side plays it). */
async function signerAppLogin() {
  await page.locator('.qr svg').waitFor()
  const offer = await page.locator('input.uri').inputValue()
  await snap('connect-offer')
  await go('offer', { uri: offer })
  await byId('invite').waitFor()
  await snap('connect-registering')
  step('done', { me: await byId('me').getAttribute('title') })
}

/** Everything else, logged in with a pasted bunker:// URI. */
async function wholeDay() {

  // Login: the nostrconnect:// offer and its QR are there; the agent pastes a bunker URI.
  await page.locator('.qr svg').waitFor()
  const offer = await page.locator('input.uri').inputValue()
  expect(offer.startsWith('nostrconnect://'), `a nostrconnect:// URI, not ${offer}`)
  await snap('login')
  await byId('bunker').fill(env('BUNKER'))
  await byId('login-connect').click()

  // Registration, with the form's own check first (nothing is sent).
  await byId('invite').waitFor()
  await byId('invite').fill('ABC')
  await byId('register').click()
  await page.locator('[data-err-for="invite"]', { hasText: '16 letters' }).waitFor()
  await snap('register-checked')
  await byId('invite').fill(env('INVITE'))
  await byId('agent-name').fill('Juma')
  await byId('register').click()
  await page.locator('.flash.ok', { hasText: 'registered as an agent' }).waitFor()
  await byId('onb-phone').waitFor()
  step('registered')

  // Swahili, then back.
  await byId('lang').click()
  await byId('tab-merchants').filter({ hasText: 'Wafanyabiashara' }).waitFor()
  await snap('swahili')
  await byId('lang').click()
  await byId('tab-merchants').filter({ hasText: 'Merchants' }).waitFor()

  // Onboarding: pending, with the activation code for the owner.
  await byId('onb-phone').fill('0712')
  await byId('onboard').click()
  await page.locator('[data-err-for="onb-phone"]', { hasText: '+ and 7 to 15 digits' }).waitFor()
  await byId('onb-phone').fill(env('PHONE'))
  await byId('onb-name').fill('Mama Duka')
  await byId('onboard').click()
  const code = (await page.locator('.activation-code').textContent()).trim()
  const merchant = page.locator('.merchant')
  await merchant.locator('.badge.status-pending').waitFor()
  const npub = await merchant.getAttribute('data-npub')
  await snap('onboarded-pending')
  await go('onboarded', { code, npub })

  // The owner dialled in: soko's merchant_active notice makes it active at once (no refresh
  // asked for, and the fallback poll is minutes away).
  await page.locator('.merchant[data-status="active"]').waitFor({ timeout: 20_000 })
  await byId('tab-notices').locator('.count').waitFor()
  await snap('merchant-active')

  // A stall: the form refuses what soko would (a currency that is no code), soko refuses a
  // code it has no rate for, with its sentence; then a good one goes to the merchant.
  await page.locator('.new-stall').click()
  await byId('f-id').fill('duka')
  await byId('f-name').fill('Mama Duka')
  await byId('f-currency').fill('bitcoin')
  await byId('add-zone').click()
  await byId('zone0.id').fill('nairobi')
  await byId('zone0.name').fill('Nairobi')
  await byId('zone0.cost').fill('100')
  await byId('zone0.regions').fill('KE')
  await byId('send').click()
  await page.locator('[data-err-for="f-currency"]', { hasText: 'three-letter code' }).waitFor()
  await byId('f-currency').fill('XYZ')
  await byId('send').click()
  const refusal = page.locator('.flash.err', { hasText: 'soko refused' })
  await refusal.waitFor()
  const refusalText = (await refusal.textContent()).trim()
  expect(refusalText.includes('XYZ') && !refusalText.includes('{'), `a sentence naming XYZ, not ${refusalText}`)
  await snap('refusal-currency')
  step('refused', { text: refusalText })
  await byId('f-currency').fill('sat')
  await byId('send').click()
  const stall = page.locator('.proposal[data-kind="stall"]')
  await stall.locator('.badge.status-pending').waitFor()
  await snap('stall-pending')
  await go('stall-proposed')
  await page.locator('.proposal[data-kind="stall"][data-status="approved"]').waitFor()
  await snap('stall-approved')

  // A product of the published stall, with its zone's extra shipping.
  await byId('tab-merchants').click()
  await page.locator('.listing[data-kind="30017"][data-id="duka"]').waitFor()
  await page.locator('.new-product').click()
  await byId('f-id').fill('mango')
  await byId('f-name').fill('Mango')
  await byId('f-description').fill('Sweet Tommy Atkins mangoes')
  await byId('f-price').fill('500')
  await byId('f-quantity').fill('10')
  await byId('f-images').fill('https://example.com/mango.jpg')
  await byId('ship.nairobi').fill('10')
  // Categories: the form's check first (at most 10), then typed as a person would.
  await byId('f-categories').fill(Array.from({ length: 11 }, (_, n) => `c${n}`).join(','))
  await byId('send').click()
  await page.locator('[data-err-for="f-categories"]', { hasText: 'At most 10 categories' }).waitFor()
  await byId('f-categories').fill(' Fruit, organic,fruit')
  await snap('product-form')
  await byId('send').click()
  const proposed = page.locator('.proposal[data-kind="product"]')
  await proposed.locator('.badge.status-pending').waitFor()
  await proposed.locator('.categories', { hasText: 'fruit, organic' }).waitFor()
  await go('product-proposed')
  await page.locator('.proposal[data-kind="product"][data-status="approved"]').waitFor()
  await snap('product-approved')

  // A paid order of the merchant reaches the agent as a notice.
  await go('listed')
  await byId('tab-notices').click()
  await page.locator('.notice-order_paid', { hasText: '1120 sat' }).waitFor()
  await snap('order-paid')

  // A deletion proposed, then withdrawn before the merchant decides.
  page.once('dialog', (dialog) => dialog.accept())
  await byId('tab-merchants').click()
  await page.locator('.listing[data-kind="30018"][data-id="mango"] button', { hasText: 'Propose deletion' }).click()
  await page.locator('.flash.ok', { hasText: 'sent' }).waitFor()
  await byId('tab-proposals').click()
  const deletion = page.locator('.proposal[data-kind="delete"]')
  await deletion.locator('.badge.status-pending').waitFor()
  await deletion.locator('button.withdraw').click()
  await page.locator('.proposal[data-kind="delete"][data-status="withdrawn"]').waitFor()
  await snap('deletion-withdrawn')

  // A phone that is another merchant's already: a link request for its owner, not a link.
  await byId('tab-merchants').click()
  await byId('onb-phone').fill(env('OTHER_PHONE'))
  await byId('onb-name').fill('Baba Duka')
  await byId('onboard').click()
  await page.locator('.flash.ok', { hasText: 'asked its owner to approve you' }).waitFor()
  expect((await page.locator('.merchant').count()) === 1, 'no merchant is linked by a link request')
  await byId('tab-proposals').click()
  await page.locator('.proposal[data-kind="link"][data-status="pending"]').waitFor()
  await snap('link-requested')

  // Editing the product: the form starts from what is published; the new price goes to the
  // merchant like any proposal.
  await byId('tab-merchants').click()
  await page.locator('.listing[data-kind="30018"][data-id="mango"] .categories', { hasText: 'fruit, organic' }).waitFor()
  await page.locator('.listing[data-kind="30018"][data-id="mango"] button', { hasText: 'Edit' }).click()
  expect((await byId('f-id').inputValue()) === 'mango' && (await byId('f-price').inputValue()) === '500', 'the form holds the published product')
  expect((await byId('ship.nairobi').inputValue()) === '10', 'the form holds the published shipping')
  const shown = await byId('f-categories').inputValue()
  expect(shown === 'fruit, organic', `the form holds the published categories, not ${shown}`)
  await byId('f-price').fill('450')
  await byId('f-categories').fill('fruit, Local')
  await byId('send').click()
  await page.locator('.proposal[data-kind="product"][data-status="pending"]').waitFor()
  await go('product-edited')
  await page.waitForFunction(() => document.querySelectorAll('.proposal[data-kind="product"][data-status="approved"]').length === 2, null, { timeout: WAIT })

  // A reload keeps the session: no login again.
  await page.reload()
  await byId('tab-merchants').waitFor()
  await page.locator('.merchant[data-status="active"] .listing[data-kind="30018"][data-id="mango"]', { hasText: '450 sat' }).waitFor()
  await snap('reloaded')

  // soko's relay goes away: the page says so.
  await go('reloaded')
  await page.locator('#relay-status [role="alert"]', { hasText: 'Cannot reach the relay' }).waitFor()
  await snap('relay-down')
  step('done', { npub })
}
