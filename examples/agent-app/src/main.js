// soko's agent app: screens and forms. Everything it knows comes from soko's answers and
// notices (kinds/agents.md) and from the merchants' listings on the relay.
import { renderSVG } from 'uqr'
import { t, setLang, getLang, has } from './i18n.js'
import * as rules from './rules.js'
import { Link, newConnectOffer, toHexKey, npubOf } from './nostr.js'

// --- storage: the soko it talks to, the NIP-46 session (client key + signer's relays), notices

const PREFIX = 'soko-agent-'
const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(PREFIX + key)
      return v === null ? fallback : JSON.parse(v)
    } catch {
      return fallback
    }
  },
  set(key, value) {
    try {
      if (value === undefined) localStorage.removeItem(PREFIX + key)
      else localStorage.setItem(PREFIX + key, JSON.stringify(value))
    } catch {
      // storage denied: the app still works, it just forgets on reload
    }
  },
}

const state = {
  screen: 'setup',
  tab: 'merchants',
  role: null,
  merchants: [],
  proposals: [],
  listings: {},
  notices: [],
  unseen: 0,
  flash: null,
  onboarded: null,
  offer: null,
  form: null,
  relayUp: true,
}
let link = null
let loginAbort = null

// --- a small DOM helper

function h(tag, props, ...kids) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'class') el.className = v
    else if (k === 'value') el.value = v
    else el.setAttribute(k, v === true ? '' : v)
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue
    el.append(kid instanceof Node ? kid : String(kid))
  }
  return el
}

/** A labelled input with a slot for its error. */
function field(id, label, props = {}) {
  const { textarea, ...rest } = props
  const input = textarea ? h('textarea', { id, name: id, rows: 3, ...rest }) : h('input', { id, name: id, ...rest })
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, h('p', { class: 'field-err', 'data-err-for': id }))
}

function showErrors(root, errors) {
  root.querySelectorAll('.field-err').forEach((p) => (p.textContent = ''))
  for (const [name, [key, params]] of Object.entries(errors)) {
    const slot = root.querySelector(`[data-err-for="${name}"]`)
    if (slot) slot.textContent = t(key, params)
  }
  if (Object.keys(errors).length) {
    flash('err', t('f.fix'))
    return true
  }
  return false
}

const val = (id) => (document.getElementById(id)?.value ?? '').trim()

// --- messages

/** A sentence for whatever went wrong: soko's refusal from its code and message, a timeout, a signer's failure. */
function sentence(e) {
  if (e && e.refusal) {
    const { code, message } = e.refusal
    const said = has(`err.${code}`) ? t(`err.${code}`) : t('err.other', { code })
    const text = t('err.refused', { sentence: said })
    return message ? `${text} ${t('err.details', { message })}` : text
  }
  if (e && e.code === 'timeout') return t(`err.timeout.${e.what}`)
  if (e && e.code === 'bad_bunker') return t('err.bad_bunker')
  // A publish every relay refused (nostr-tools rejects with each relay's reason).
  if (e instanceof AggregateError) {
    return t('err.relay_refused', { message: e.errors.map((x) => (x && x.message) || String(x)).join('; ') })
  }
  return t('err.signer', { message: (e && e.message) || String(e) })
}

function flash(kind, text) {
  state.flash = { kind, text }
  const box = document.getElementById('flash')
  if (box) paintFlash(box)
}

function paintFlash(box) {
  box.replaceChildren()
  if (!state.flash) return
  box.append(h('div', { class: `flash ${state.flash.kind}`, role: state.flash.kind === 'err' ? 'alert' : 'status' }, state.flash.text))
}

/** Runs `work` with `button` disabled, saying "working" and, after a while, that it is slow. */
async function run(button, work) {
  if (button) button.disabled = true
  flash('busy', t('busy'))
  const slow = setTimeout(() => flash('busy', t('slow')), 8000)
  try {
    await work()
  } catch (e) {
    flash('err', sentence(e))
  } finally {
    clearTimeout(slow)
    if (button) button.disabled = false
    if (state.flash && state.flash.kind === 'busy') {
      state.flash = null
      const box = document.getElementById('flash')
      if (box) paintFlash(box)
    }
  }
}

/** Asks soko; its result, or throws its refusal. */
async function call(cmd, args) {
  const answer = await link.ask(cmd, args)
  if (!answer.ok) {
    const e = new Error((answer.error && answer.error.message) || 'refused')
    e.refusal = answer.error || { code: 'internal' }
    throw e
  }
  return answer.result
}

// --- configuration: ?relay=…&bot=… or what was entered before

function config() {
  const q = new URLSearchParams(location.search)
  const relay = q.get('relay') || store.get('relay', '')
  const bot = toHexKey(q.get('bot') || '') || store.get('bot', '')
  if (q.get('relay')) store.set('relay', relay)
  if (toHexKey(q.get('bot') || '')) store.set('bot', bot)
  return { relay, bot }
}

function sessionKey() {
  const { relay, bot } = config()
  return `session-${relay}-${bot}`
}

// --- screens

function render() {
  const app = document.getElementById('app')
  const screens = {
    setup: renderSetup,
    login: renderLogin,
    wait: renderWait,
    register: renderRegister,
    other: renderOtherRole,
    home: renderHome,
    stall: renderStallForm,
    product: renderProductForm,
  }
  document.documentElement.lang = getLang()
  document.title = t('app.title')
  // A repaint of the same screen (a notice arrived, a list refreshed) keeps what the agent
  // was typing and where.
  const same = state.screen === lastScreen && !state.clearInputs
  const typed = same ? [...app.querySelectorAll('input[id], textarea[id], select[id]')].map((el) => [el.id, el.value]) : []
  const focused = same && document.activeElement ? document.activeElement.id : null
  app.replaceChildren(header(), banner(), h('div', { id: 'flash' }), screens[state.screen]())
  for (const [id, value] of typed) {
    const el = document.getElementById(id)
    if (el && !el.readOnly) el.value = value
  }
  if (focused) document.getElementById(focused)?.focus()
  lastScreen = state.screen
  state.clearInputs = false
  paintFlash(document.getElementById('flash'))
}
let lastScreen = null

function header() {
  const me = link && link.me && state.screen !== 'login' ? npubOf(link.me) : null
  return h(
    'header',
    {},
    h('div', {}, h('h1', {}, t('app.title')), me ? h('p', { id: 'me', class: 'muted mono', title: me }, `${me.slice(0, 20)}…`) : null),
    h('button', {
      id: 'lang', class: 'small', type: 'button',
      onclick: () => {
        setLang(getLang() === 'en' ? 'sw' : 'en')
        store.set('lang', getLang())
        render()
      },
    }, t('lang.other')),
  )
}

function banner() {
  const { relay } = config()
  return h('div', { id: 'relay-status' }, state.relayUp || !link ? null : h('div', { class: 'flash err', role: 'alert' }, t('relay.down', { relay })))
}

function setRelayUp(up) {
  if (state.relayUp === up) return
  state.relayUp = up
  const old = document.getElementById('relay-status')
  if (old) old.replaceWith(banner())
}

function renderSetup() {
  const { relay, bot } = config()
  const form = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault()
        const errors = {}
        const r = val('setup-relay')
        if (!/^wss?:\/\/.+/.test(r)) errors['setup-relay'] = ['setup.badRelay']
        const b = toHexKey(val('setup-bot'))
        if (!b) errors['setup-bot'] = ['setup.badBot']
        if (showErrors(form, errors)) return
        state.flash = null
        store.set('relay', r)
        store.set('bot', b)
        start()
      },
    },
    h('h2', {}, t('setup.title')),
    h('p', {}, t('setup.help')),
    field('setup-relay', t('setup.relay'), { value: relay, inputmode: 'url', autocapitalize: 'off', placeholder: 'wss://…' }),
    field('setup-bot', t('setup.bot'), { value: bot ? npubOf(bot) : '', autocapitalize: 'off', placeholder: 'npub1…' }),
    h('button', { type: 'submit' }, t('setup.save')),
  )
  return form
}

function renderLogin() {
  const { relay } = config()
  if (!state.offer) {
    state.offer = newConnectOffer([relay])
    loginAbort?.abort()
    loginAbort = new AbortController()
    const offer = state.offer
    const abort = loginAbort
    link
      .loginConnect(offer, abort.signal)
      .then(loggedIn)
      .catch((e) => {
        // Aborted: the agent pasted a bunker URI instead, or left; nothing to say then.
        if (!abort.signal.aborted) flash('err', sentence(e))
      })
  }
  const uri = state.offer.uri
  const paste = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault()
        const button = paste.querySelector('button')
        run(button, async () => {
          const session = await link.loginBunker(val('bunker'))
          loginAbort?.abort()
          await loggedIn(session)
        })
      },
    },
    h('p', {}, t('login.paste')),
    field('bunker', t('login.bunker'), { autocapitalize: 'off', autocomplete: 'off', placeholder: 'bunker://…' }),
    h('button', { id: 'login-connect', type: 'submit' }, t('login.connect')),
  )
  const qr = h('div', { class: 'qr' })
  qr.innerHTML = renderSVG(uri, { border: 2 })
  return h(
    'section',
    {},
    h('h2', {}, t('login.title')),
    h('p', {}, t('login.help')),
    h('p', {}, t('login.scan')),
    qr,
    h('a', { class: 'button', href: uri }, t('login.openSigner')),
    h('p', { class: 'muted' }, t('login.waiting')),
    h('input', { class: 'uri', readonly: true, value: uri, onfocus: (ev) => ev.target.select() }),
    paste,
    h('button', {
      class: 'small secondary', type: 'button',
      onclick: () => {
        loginAbort?.abort()
        state.offer = null
        store.set('relay', undefined)
        store.set('bot', undefined)
        history.replaceState(null, '', location.pathname)
        link?.close()
        link = null
        state.screen = 'setup'
        render()
      },
    }, t('login.change')),
  )
}

function renderWait() {
  return h('section', {}, h('p', { class: 'muted' }, t(state.waitKey || 'busy')), logoutButton())
}

function renderRegister() {
  const form = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault()
        const code = val('invite')
        const name = val('agent-name')
        const errors = {}
        const bad = rules.checkInvite(code)
        if (bad) errors.invite = bad
        const badName = rules.checkAgentName(name)
        if (badName) errors['agent-name'] = badName
        if (showErrors(form, errors)) return
        run(form.querySelector('button'), async () => {
          const event = await link.signRegistration(code, name)
          await call('register', { event })
          state.role = 'agent'
          flash('ok', t('reg.done'))
          home()
        })
      },
    },
    h('h2', {}, t('reg.title')),
    h('p', {}, t('reg.help')),
    field('invite', t('reg.code'), { autocapitalize: 'characters', autocomplete: 'off', placeholder: 'XXXX-XXXX-XXXX-XXXX' }),
    field('agent-name', t('reg.name'), { autocomplete: 'name' }),
    h('button', { id: 'register', type: 'submit' }, t('reg.submit')),
    logoutButton(),
  )
  return form
}

function renderOtherRole() {
  return h('section', {}, h('p', {}, t('who.otherRole', { role: state.role })), logoutButton())
}

function logoutButton() {
  return h('button', { class: 'small secondary', type: 'button', onclick: logout }, t('nav.logout'))
}

function renderHome() {
  const tabs = ['merchants', 'proposals', 'notices']
  const nav = h(
    'nav',
    {},
    tabs.map((tab) =>
      h('button', {
        id: `tab-${tab}`, type: 'button', class: state.tab === tab ? 'tab on' : 'tab',
        onclick: () => {
          state.tab = tab
          state.flash = null
          if (tab === 'notices') state.unseen = 0
          render()
        },
      }, t(`nav.${tab}`), tab === 'notices' && state.unseen ? h('span', { class: 'count' }, state.unseen) : null),
    ),
  )
  const body = { merchants: merchantsTab, proposals: proposalsTab, notices: noticesTab }[state.tab]()
  const tools = h(
    'div',
    { class: 'tools' },
    h('button', { id: 'refresh', class: 'small secondary', type: 'button', onclick: (ev) => run(ev.currentTarget, refresh) }, t('nav.refresh')),
    logoutButton(),
  )
  return h('main', {}, nav, body, tools)
}

function merchantsTab() {
  const form = h(
    'form',
    {
      class: 'card',
      onsubmit: (ev) => {
        ev.preventDefault()
        const phone = val('onb-phone')
        const name = val('onb-name')
        const errors = {}
        const badPhone = rules.checkPhone(phone)
        if (badPhone) errors['onb-phone'] = badPhone
        const badName = rules.checkShopName(name)
        if (badName) errors['onb-name'] = badName
        if (showErrors(form, errors)) return
        run(form.querySelector('button'), async () => {
          const result = await call('merchant_onboard', { phone, name })
          state.clearInputs = true
          if (result.link === 'linked') {
            state.onboarded = { name, phone, code: result.activation_code }
            state.flash = null
          } else {
            state.onboarded = null
            state.flash = { kind: 'ok', text: t('onb.requested') }
          }
          await refresh()
        })
      },
    },
    h('h2', {}, t('onb.title')),
    field('onb-phone', t('onb.phone'), { type: 'tel', inputmode: 'tel', autocomplete: 'off', placeholder: '+2547…' }),
    field('onb-name', t('onb.name'), { autocomplete: 'off' }),
    h('button', { id: 'onboard', type: 'submit' }, t('onb.submit')),
  )
  const code = state.onboarded
    ? h('div', { class: 'card code' }, h('p', {}, t('onb.code', state.onboarded)), h('p', { class: 'activation-code' }, state.onboarded.code))
    : null
  const list = state.merchants.length
    ? state.merchants.map(merchantCard)
    : [h('p', { class: 'muted' }, t('m.none'))]
  return h('section', {}, code, form, h('div', { id: 'merchants' }, list))
}

function merchantCard(m) {
  const hex = m.pubkey
  const listings = state.listings[hex]
  const stalls = listings ? listings.stalls : []
  const products = listings ? listings.products : []
  const listingRow = (kind, item) =>
    h(
      'li',
      { class: 'listing', 'data-kind': kind, 'data-id': item.id },
      h('span', {}, item.name || item.id, kind === 30018 ? ` · ${item.price} ${item.currency}` : ` · ${item.currency}`,
        kind === 30018 && item.categories && item.categories.length ? h('span', { class: 'categories muted' }, ` · ${item.categories.join(', ')}`) : null),
      h('span', { class: 'row' },
        h('button', {
          class: 'small secondary', type: 'button',
          onclick: () => openForm(kind === 30017 ? 'stall' : 'product', m, item),
        }, t('m.edit')),
        h('button', {
          class: 'small secondary', type: 'button',
          onclick: (ev) => {
            if (!window.confirm(t('m.deleteAsk', { name: item.name || item.id }))) return
            run(ev.currentTarget, async () => {
              const p = await call('propose_delete', { merchant: m.npub, kind, id: item.id })
              flash('ok', t('p.sent', { n: p.proposal }))
              await refresh()
            })
          },
        }, t('m.delete')),
      ),
    )
  return h(
    'div',
    { class: 'card merchant', 'data-npub': m.npub, 'data-status': m.status },
    h('div', { class: 'row' }, h('strong', {}, m.name), h('span', { class: `badge status-${m.status}` }, t(`m.${m.status}`) || m.status)),
    h('p', { class: 'muted mono' }, `${m.npub.slice(0, 16)}…`),
    m.status === 'pending' ? h('p', { class: 'muted' }, t('m.pendingHelp')) : null,
    listings ? null : h('p', { class: 'muted' }, t('m.loading')),
    h('h3', {}, t('m.stalls')),
    stalls.length ? h('ul', {}, stalls.map((s) => listingRow(30017, s))) : h('p', { class: 'muted' }, t('m.noStalls')),
    h('h3', {}, t('m.products')),
    products.length ? h('ul', {}, products.map((p) => listingRow(30018, p))) : h('p', { class: 'muted' }, t('m.noProducts')),
    h('div', { class: 'row' },
      h('button', { class: 'new-stall', type: 'button', onclick: () => openForm('stall', m, null) }, t('m.newStall')),
      h('button', { class: 'new-product', type: 'button', onclick: () => openForm('product', m, null) }, t('m.newProduct')),
    ),
  )
}

function proposalsTab() {
  if (!state.proposals.length) return h('p', { class: 'muted' }, t('p.none'))
  const nameOf = (npub) => (state.merchants.find((m) => m.npub === npub) || {}).name || (npub ? `${npub.slice(0, 12)}…` : '')
  return h(
    'section',
    { id: 'proposals' },
    state.proposals.map((p) =>
      h(
        'div',
        { class: 'card proposal', 'data-proposal': p.proposal, 'data-kind': p.kind, 'data-status': p.status },
        h('div', { class: 'row' },
          h('strong', {}, t(`p.${p.kind}`), p.id ? ` ${p.id}` : ''),
          h('span', { class: `badge status-${p.status}` }, t(`p.${p.status}`)),
        ),
        h('p', { class: 'muted' }, [t('p.number', { n: p.proposal }), nameOf(p.merchant), new Date(p.created_at * 1000).toLocaleString(getLang())].filter(Boolean).join(' · ')),
        p.categories && p.categories.length ? h('p', { class: 'categories' }, t('p.categories', { list: p.categories.join(', ') })) : null,
        p.status === 'pending'
          ? h('button', {
              class: 'small secondary withdraw', type: 'button',
              onclick: (ev) => run(ev.currentTarget, async () => {
                await call('proposal_withdraw', { proposal: p.proposal })
                await refresh()
              }),
            }, t('p.withdraw'))
          : null,
      ),
    ),
  )
}

function noticesTab() {
  if (!state.notices.length) return h('p', { class: 'muted' }, t('n.none'))
  return h('section', { id: 'notices' }, state.notices.map((n) => h('div', { class: `card notice notice-${n.notice}` }, noticeText(n), h('p', { class: 'muted' }, new Date(n.at * 1000).toLocaleString(getLang())))))
}

function noticeText(n) {
  const a = n.args || {}
  if (n.notice === 'proposal') {
    return h('p', {}, t('n.proposal', { n: a.proposal, kind: t(`p.${a.kind}`), id: a.id || '', status: t(`p.${a.status}`) }))
  }
  if (n.notice === 'order_paid') {
    const items = (a.items || []).map((i) => t('n.item', { quantity: i.quantity, name: i.name || i.product_id }))
    const b = a.buyer
    const details = b ? [b.name, b.address, b.phone, b.email, b.zone, b.note].filter(Boolean).join(', ') : null
    return h('div', {}, h('p', {}, t('n.orderPaid', { order: a.order, shop: a.shop, amount: a.amount_sat })), h('p', {}, items.join(', ')), details ? h('p', {}, t('n.buyer', { details })) : null)
  }
  if (n.notice === 'unlinked') return h('p', {}, t('n.unlinked'))
  if (n.notice === 'merchant_active') return h('p', {}, t('n.merchantActive', { shop: a.shop || '' }))
  return h('p', {}, t('n.other', { type: n.notice }))
}

// --- stall and product forms

function openForm(kind, merchant, item) {
  state.form = { merchant, item, zones: kind === 'stall' ? ((item && item.shipping) || []).map((z) => ({ ...z })) : null }
  state.screen = kind
  state.flash = null
  render()
  window.scrollTo(0, 0)
}

function closeForm() {
  state.form = null
  state.screen = 'home'
  render()
}

function backButton() {
  return h('button', { class: 'small secondary', type: 'button', onclick: closeForm }, t('f.back'))
}

function renderStallForm() {
  const { merchant, item } = state.form
  const s = item || {}
  const zones = h('div', { id: 'zones' })
  const zoneRow = (z, i) =>
    h(
      'fieldset',
      { class: 'zone', 'data-zone': i },
      field(`zone${i}.id`, t('stall.zone.id'), { class: 'zone-id', value: z.id || '', autocapitalize: 'off' }),
      field(`zone${i}.name`, t('stall.zone.name'), { class: 'zone-name', value: z.name || '' }),
      field(`zone${i}.cost`, t('stall.zone.cost'), { class: 'zone-cost', value: z.cost ?? '', inputmode: 'decimal' }),
      field(`zone${i}.regions`, t('stall.zone.regions'), { class: 'zone-regions', value: (z.regions || []).join(', ') }),
      h('button', {
        class: 'small secondary', type: 'button',
        onclick: () => {
          readZones()
          state.form.zones.splice(i, 1)
          paintZones()
        },
      }, t('stall.zone.remove')),
    )
  const readZones = () => {
    state.form.zones = [...zones.querySelectorAll('.zone')].map((row) => ({
      id: row.querySelector('.zone-id').value.trim(),
      name: row.querySelector('.zone-name').value.trim(),
      costText: row.querySelector('.zone-cost').value.trim(),
      cost: row.querySelector('.zone-cost').value.trim(),
      regions: row.querySelector('.zone-regions').value.split(',').map((r) => r.trim()).filter(Boolean),
    }))
  }
  const paintZones = () => zones.replaceChildren(...state.form.zones.map(zoneRow))
  paintZones()
  const form = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault()
        readZones()
        const draft = {
          id: val('f-id'),
          name: val('f-name'),
          description: val('f-description'),
          currency: val('f-currency'),
          shipping: state.form.zones,
        }
        const errors = rules.checkStall(draft)
        const named = {}
        for (const [k, v] of Object.entries(errors)) named[k.includes('.') ? k : `f-${k}`] = v
        if (showErrors(form, named)) return
        const stall = {
          id: draft.id,
          name: draft.name,
          currency: draft.currency,
          shipping: draft.shipping.map((z) => ({ id: z.id, ...(z.name ? { name: z.name } : {}), cost: rules.amount(z.costText), regions: z.regions })),
        }
        if (draft.description) stall.description = draft.description
        run(form.querySelector('button[type=submit]'), async () => {
          const p = await call('propose_stall', { merchant: merchant.npub, stall })
          state.form = null
          state.screen = 'home'
          state.tab = 'proposals'
          state.flash = { kind: 'ok', text: t('p.sent', { n: p.proposal }) }
          render()
          await refresh()
        })
      },
    },
    h('h2', {}, t('stall.title', { merchant: merchant.name })),
    field('f-id', t('stall.id'), { value: s.id || '', readonly: item ? true : null, autocapitalize: 'off' }),
    field('f-name', t('stall.name'), { value: s.name || '' }),
    field('f-description', t('stall.description'), { textarea: true, value: s.description || '' }),
    field('f-currency', t('stall.currency'), { value: s.currency || 'sat', autocapitalize: 'off' }),
    h('h3', {}, t('stall.zones')),
    zones,
    h('button', {
      id: 'add-zone', class: 'small secondary', type: 'button',
      onclick: () => {
        readZones()
        state.form.zones.push({ id: '', name: '', cost: '', regions: [] })
        paintZones()
      },
    }, t('stall.zone.add')),
    h('button', { id: 'send', type: 'submit' }, t('f.send')),
    backButton(),
  )
  return form
}

function renderProductForm() {
  const { merchant, item } = state.form
  const stalls = (state.listings[merchant.pubkey] || { stalls: [] }).stalls
  if (!stalls.length) return h('section', {}, h('h2', {}, t('product.title', { merchant: merchant.name })), h('p', { class: 'flash err' }, t('product.noStall')), backButton())
  const p = item || {}
  const stallOf = (id) => stalls.find((s) => s.id === id)
  const extras = h('div', { id: 'extras' })
  const priceLabel = h('span')
  const paintStall = () => {
    const stall = stallOf(document.getElementById('f-stall')?.value || p.stall_id || stalls[0].id) || stalls[0]
    priceLabel.textContent = t('product.price', { currency: stall.currency })
    extras.replaceChildren(
      ...(stall.shipping || []).map((z) => {
        const current = (p.shipping || []).find((x) => x.id === z.id)
        return field(`ship.${z.id}`, z.name ? `${z.name} (${z.id})` : z.id, { class: 'extra', 'data-zone': z.id, value: current ? current.cost : '', inputmode: 'decimal' })
      }),
    )
  }
  const select = h(
    'select',
    { id: 'f-stall', name: 'f-stall', onchange: paintStall },
    stalls.map((s) => h('option', { value: s.id, selected: (p.stall_id || stalls[0].id) === s.id ? true : null }, `${s.name} (${s.currency})`)),
  )
  const priceField = field('f-price', '', { value: p.price ?? '', inputmode: 'decimal' })
  priceField.querySelector('label').append(priceLabel)
  const form = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault()
        const stall = stallOf(val('f-stall'))
        const draft = {
          id: val('f-id'),
          name: val('f-name'),
          priceText: val('f-price'),
          quantityText: val('f-quantity'),
          images: val('f-images').split('\n').map((u) => u.trim()).filter(Boolean),
          categories: rules.categories(val('f-categories')),
          shipping: [...extras.querySelectorAll('.extra')].map((input) => ({ id: input.dataset.zone, costText: input.value.trim() })),
        }
        const errors = rules.checkProduct(draft, stall)
        const named = {}
        for (const [k, v] of Object.entries(errors)) named[k.startsWith('ship.') ? k : k === 'stall' ? 'f-stall' : `f-${k}`] = v
        if (showErrors(form, named)) return
        const product = {
          id: draft.id,
          stall_id: stall.id,
          name: draft.name,
          currency: stall.currency,
          price: rules.amount(draft.priceText),
          quantity: draft.quantityText === '' ? null : Number(draft.quantityText),
          shipping: draft.shipping.filter((x) => x.costText !== '').map((x) => ({ id: x.id, cost: rules.amount(x.costText) })),
        }
        const description = val('f-description')
        if (description) product.description = description
        if (draft.images.length) product.images = draft.images
        if (p.specs) product.specs = p.specs
        run(form.querySelector('button[type=submit]'), async () => {
          // Always sent: the field shows the product's categories, so an emptied field
          // means none (soko keeps them only when the argument is absent).
          const proposal = await call('propose_product', { merchant: merchant.npub, product, categories: draft.categories })
          state.form = null
          state.screen = 'home'
          state.tab = 'proposals'
          state.flash = { kind: 'ok', text: t('p.sent', { n: proposal.proposal }) }
          render()
          await refresh()
        })
      },
    },
    h('h2', {}, t('product.title', { merchant: merchant.name })),
    h('div', { class: 'field' }, h('label', { for: 'f-stall' }, t('product.stall')), select, h('p', { class: 'field-err', 'data-err-for': 'f-stall' })),
    field('f-id', t('product.id'), { value: p.id || '', readonly: item ? true : null, autocapitalize: 'off' }),
    field('f-name', t('product.name'), { value: p.name || '' }),
    field('f-description', t('product.description'), { textarea: true, value: p.description || '' }),
    priceField,
    field('f-quantity', t('product.quantity'), { value: p.quantity ?? '', inputmode: 'numeric' }),
    field('f-images', t('product.images'), { textarea: true, value: (p.images || []).join('\n'), autocapitalize: 'off' }),
    field('f-categories', t('product.categories'), { value: (p.categories || []).join(', '), autocapitalize: 'off', placeholder: t('product.categoriesHint') }),
    h('h3', {}, t('product.shipping')),
    extras,
    h('button', { id: 'send', type: 'submit' }, t('f.send')),
    backButton(),
  )
  paintStall()
  return form
}

// --- what happens

/** soko's view of the agent's merchants and proposals, then each merchant's listings. */
async function refresh() {
  const overview = await call('agent_merchants', {})
  state.merchants = overview.merchants || []
  state.proposals = overview.proposals || []
  repaintHome()
  await Promise.all(
    state.merchants.map(async (m) => {
      try {
        state.listings[m.pubkey] = await link.listings(m.pubkey)
      } catch {
        // the relay is down: the banner says so, the lists stay as they were
      }
    }),
  )
  repaintHome()
}

function repaintHome() {
  if (state.screen === 'home') render()
}

function onNotice(message) {
  state.notices.unshift({ ...message, at: Math.floor(Date.now() / 1000) })
  state.notices = state.notices.slice(0, 200)
  store.set(`notices-${link.me}`, state.notices)
  if (state.tab !== 'notices') state.unseen += 1
  repaintHome()
  if (message.notice === 'merchant_active') {
    // The owner finished onboarding: show it at once, then fetch what changed with it.
    const m = state.merchants.find((x) => x.npub === (message.args || {}).merchant)
    if (m) m.status = 'active'
    repaintHome()
  }
  if (message.notice === 'proposal' || message.notice === 'unlinked' || message.notice === 'merchant_active') {
    refresh().catch((e) => flash('err', sentence(e)))
  }
}

async function loggedIn(session) {
  state.offer = null
  store.set(sessionKey(), { clientSk: session.clientSk, bunker: session.bunker })
  state.notices = store.get(`notices-${session.me}`, [])
  await whoami()
}

async function whoami() {
  state.screen = 'wait'
  state.waitKey = 'who.checking'
  render()
  const me = await call('whoami', {})
  state.role = me.role
  if (me.role === 'agent') home()
  else if (me.role === 'anonymous') {
    state.screen = 'register'
    render()
  } else {
    state.screen = 'other'
    render()
  }
}

function home() {
  state.screen = 'home'
  render()
  refresh().catch((e) => flash('err', sentence(e)))
}

function logout() {
  loginAbort?.abort()
  store.set(sessionKey(), undefined)
  link?.close()
  Object.assign(state, { merchants: [], proposals: [], listings: {}, notices: [], unseen: 0, onboarded: null, offer: null, form: null, flash: null, role: null })
  start()
}

/** Connects to the configured soko and resumes the remembered session, if any. */
function start() {
  const { relay, bot } = config()
  if (!relay || !bot) {
    state.screen = 'setup'
    render()
    return
  }
  link?.close()
  state.relayUp = true
  link = new Link({ relay, bot, onStatus: setRelayUp })
  link.onMessage = onNotice
  const session = store.get(sessionKey(), null)
  if (!session) {
    state.screen = 'login'
    render()
    return
  }
  state.screen = 'wait'
  state.waitKey = 'login.resuming'
  render()
  link
    .resume(session)
    .then(loggedIn)
    .catch((e) => {
      state.screen = 'login'
      render()
      flash('err', sentence(e))
    })
}

// soko tells the agent when an owner finishes onboarding (merchant_active); in case that
// notice was missed (the page closed, the relay away), while a merchant is pending the
// list is asked for again now and then (each ask costs the signer four requests).
setInterval(() => {
  if (state.screen === 'home' && state.relayUp && state.merchants.some((m) => m.status === 'pending')) {
    refresh().catch(() => {})
  }
}, 300_000)

setLang(store.get('lang', (navigator.language || 'en').toLowerCase().startsWith('sw') ? 'sw' : 'en'))
start()
