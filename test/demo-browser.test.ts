import { mkdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Page, WebSocketRoute } from 'playwright-core'
import t from 'tap'
import { buildSdk, launchChromium, startDemoRelay } from './helpers/demo.js'

/**
 * The demo pages in Chromium, talking to each other through a real relay with the SDK: what a person
 * sees when they open the widget and the console side by side. Screenshots of both land in test/artifacts/.
 */
const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url))
const WAIT_MS = 10_000

/** The texts of the messages a page shows, in order. */
async function shownTexts (page: Page, list: string): Promise<string[]> {
  return await page.locator(`${list} li .text`).allTextContents()
}

async function waitForText (page: Page, selector: string, text: string, ms = WAIT_MS): Promise<void> {
  await page.locator(selector, { hasText: text }).first().waitFor({ timeout: ms })
}

t.test('the widget and the console talk through the relay; a cut widget recovers every message once', async (t) => {
  const relay = await startDemoRelay(t, { sdkDir: await buildSdk(t) })
  const browser = await launchChromium(t)
  const pageErrors: string[] = []
  const open = async (viewport: { width: number, height: number }): Promise<Page> => {
    const page = await (await browser.newContext({ viewport })).newPage()
    page.on('pageerror', (error) => pageErrors.push(error.message))
    page.on('console', (message) => { if (message.type() === 'error') pageErrors.push(message.text()) })
    return page
  }

  const consolePage = await open({ width: 1100, height: 700 })
  await consolePage.goto(`${relay.httpUrl}/demo/console.html?operator=7`)
  await consolePage.locator('#state[data-state="connected"]').waitFor({ timeout: WAIT_MS })

  // The widget's /chat socket goes through a route the test can cut; while `cut`, attempts fail at once.
  const widget = await open({ width: 420, height: 640 })
  let cut = false
  let live: WebSocketRoute | undefined
  await widget.routeWebSocket(/\/chat\b/, (route) => {
    if (cut) return void route.close({ code: 1006 })
    live = route
    route.connectToServer()
  })
  await widget.goto(`${relay.httpUrl}/demo/widget.html?widget=lk&name=Ann`)
  await widget.locator('#state[data-state="connected"]').waitFor({ timeout: WAIT_MS })
  const chat = await widget.locator('#chat-id').getAttribute('data-chat')
  t.ok(chat, 'the widget opened a chat')

  await t.test('the console lists the new chat under its widget and opens it', async (t) => {
    const item = consolePage.locator(`section[data-widget="lk"] .chat-item[data-chat="${chat}"]`)
    await item.waitFor({ timeout: WAIT_MS })
    t.match(await item.textContent(), /Ann/)
    await item.click()
    await consolePage.locator('#chat-state[data-state="connected"]').waitFor({ timeout: WAIT_MS })
    await waitForText(consolePage, '#operators li', 'Operator 7')
  })

  await t.test("the customer's draft shows on the console, then the message", async (t) => {
    await widget.fill('#text', 'Where is my order?')
    await waitForText(consolePage, '#typing', 'is typing: Where is my order?')
    await waitForText(consolePage, `.chat-item[data-chat="${chat}"] .draft`, 'Where is my order?')
    await widget.press('#text', 'Enter')
    await waitForText(consolePage, '#conversation li .text', 'Where is my order?')
    await waitForText(widget, '#messages li.mine .text', 'Where is my order?')
    t.pass('the message went widget → relay → console')
  })

  await t.test("the console's typing shows on the widget without its text, then the reply", async (t) => {
    await consolePage.fill('#text', 'Let me check that for you')
    await widget.locator('#typing:not([hidden])').waitFor({ timeout: WAIT_MS })
    t.equal(await widget.locator('#typing').textContent(), 'Operator is typing…')
    t.notMatch(await widget.locator('body').innerText(), /Let me check/, "the operator's draft never reaches the widget")
    await consolePage.press('#text', 'Enter')
    await waitForText(widget, '#messages li .text', 'Let me check that for you')
  })

  await t.test('a note shows on the console and never on the widget', async (t) => {
    await consolePage.fill('#note-text', 'VIP customer, be quick')
    await consolePage.press('#note-text', 'Enter')
    await waitForText(consolePage, '#conversation li.note .text', 'VIP customer, be quick')
    // A message after the note: once the widget shows it, the note would have arrived before it.
    await consolePage.fill('#text', 'Found it: it ships today')
    await consolePage.press('#text', 'Enter')
    await waitForText(widget, '#messages li .text', 'Found it: it ships today')
    t.notMatch(await widget.locator('body').innerText(), /VIP customer/)
    t.equal(await widget.locator('#messages li.note').count(), 0)
  })

  await t.test('the widget, cut while the console sends three messages, shows all three exactly once', async (t) => {
    cut = true
    await live?.close({ code: 1006 })
    await widget.locator('#state[data-state="disconnected"]').waitFor({ timeout: WAIT_MS })
    const burst = ['First of three', 'Second of three', 'Third of three']
    for (const text of burst) {
      await consolePage.fill('#text', text)
      await consolePage.press('#text', 'Enter')
      await waitForText(consolePage, '#conversation li .text', text)
    }
    t.notMatch(await widget.locator('#messages').innerText(), /of three/, 'nothing reached the cut widget')
    cut = false
    await waitForText(widget, '#messages li .text', burst[2] ?? '', 30_000)
    await waitForText(widget, '#notice', 'nothing was missed')
    const texts = await shownTexts(widget, '#messages')
    for (const text of burst) t.equal(texts.filter((shown) => shown === text).length, 1, `"${text}" once`)
    t.same(texts.filter((text) => text.endsWith('of three')), burst, 'in order')
    const ids = await widget.locator('#messages li').evaluateAll((items) => items.map((item) => item.getAttribute('data-id')))
    t.equal(new Set(ids).size, ids.length, 'no message shown twice')
  })

  await mkdir(ARTIFACTS, { recursive: true })
  await widget.screenshot({ path: `${ARTIFACTS}demo-widget.png` })
  await consolePage.screenshot({ path: `${ARTIFACTS}demo-console.png` })
  t.same(pageErrors, [], 'no uncaught error or console error in either page')
})
