// What soko checks of an agent's input (kinds/agents.md, src/market/merchants/rules.rs),
// checked here first so that the agent learns it on the spot, offline too. soko checks
// again; these never replace its answer. Each check returns null or [string key, params].

const utf8 = new TextEncoder()

/** An id: 1 to 64 bytes (soko counts bytes). */
export function checkId(id) {
  const n = utf8.encode(id || '').length
  return n >= 1 && n <= 64 ? null : ['rule.id']
}

/** A phone: `+` and 7 to 15 digits. */
export function checkPhone(phone) {
  return /^\+[0-9]{7,15}$/.test(phone || '') ? null : ['rule.phone']
}

/** A shop name: 1 to 64 characters. */
export function checkShopName(name) {
  const n = [...(name || '').trim()].length
  return n >= 1 && n <= 64 ? null : ['rule.shopName']
}

/** A registration name: at most 64 characters. */
export function checkAgentName(name) {
  return [...(name || '')].length <= 64 ? null : ['rule.agentName']
}

/** An invite code: 16 Crockford base32 characters, dashes and spaces aside. */
export function checkInvite(code) {
  const bare = (code || '').replace(/[\s-]/g, '')
  return /^[0-9A-Za-z]{16}$/.test(bare) ? null : ['rule.invite']
}

/** `sat` or a three-letter code (soko also needs a rate for it: it says so if not). */
export function checkCurrency(currency) {
  const c = currency || ''
  return c.toLowerCase() === 'sat' || /^[A-Za-z]{3}$/.test(c) ? null : ['rule.currency']
}

/** A number ≥ 0, from a form field; NaN when it is none. */
export function amount(text) {
  const t = String(text ?? '').trim()
  if (t === '' || !/^[0-9]*\.?[0-9]*$/.test(t)) return NaN
  return Number(t)
}

export function checkAmount(text) {
  const n = amount(text)
  return Number.isFinite(n) && n >= 0 ? null : ['rule.amount']
}

/** A stock: empty (unlimited) or a whole number ≥ 0. */
export function checkStock(text) {
  const t = String(text ?? '').trim()
  return t === '' || /^[0-9]+$/.test(t) ? null : ['rule.stock']
}

/** An image URL: http(s). */
export function checkImage(url) {
  try {
    const u = new URL(url)
    return u.protocol === 'https:' || u.protocol === 'http:' ? null : ['rule.image']
  } catch {
    return ['rule.image']
  }
}

/** Categories a product may have, and characters in one (soko's MAX_CATEGORIES, MAX_CATEGORY_CHARS). */
export const MAX_CATEGORIES = 10
export const MAX_CATEGORY_CHARS = 32

/**
 * Categories as typed (comma-separated) in the form soko stores them: each trimmed and
 * lower-cased, duplicates merged in first place. Empty pieces (a trailing comma) are left out.
 */
export function categories(text) {
  const kept = []
  for (const piece of String(text ?? '').split(',')) {
    const c = piece.trim().toLowerCase()
    if (c && !kept.includes(c)) kept.push(c)
  }
  return kept
}

/** A list from `categories`: at most 10, each 1 to 32 characters without control characters. */
export function checkCategories(list) {
  for (const c of list) {
    const n = [...c].length
    if (n < 1 || n > MAX_CATEGORY_CHARS || /\p{Cc}/u.test(c)) return ['rule.category', { category: c, max: MAX_CATEGORY_CHARS }]
  }
  return list.length <= MAX_CATEGORIES ? null : ['rule.categories', { max: MAX_CATEGORIES, n: list.length }]
}

/** A whole stall as soko's check_stall sees it; errors keyed by field. */
export function checkStall(stall) {
  const errors = {}
  const put = (field, err) => {
    if (err && !errors[field]) errors[field] = err
  }
  put('id', checkId(stall.id))
  put('name', stall.name.trim() ? null : ['rule.required'])
  put('currency', checkCurrency(stall.currency))
  const seen = new Set()
  stall.shipping.forEach((zone, i) => {
    put(`zone${i}.id`, checkId(zone.id) || (seen.has(zone.id) ? ['rule.zoneTwice'] : null))
    seen.add(zone.id)
    put(`zone${i}.cost`, checkAmount(zone.costText))
  })
  return errors
}

/** A whole product against its (published) stall, as soko's check_product sees it. */
export function checkProduct(product, stall) {
  const errors = {}
  const put = (field, err) => {
    if (err && !errors[field]) errors[field] = err
  }
  put('id', checkId(product.id))
  put('stall', stall ? null : ['rule.stallFirst'])
  put('name', product.name.trim() ? null : ['rule.required'])
  put('price', checkAmount(product.priceText))
  put('quantity', checkStock(product.quantityText))
  product.images.forEach((url) => put('images', checkImage(url)))
  put('categories', checkCategories(product.categories || []))
  product.shipping.forEach((extra) => {
    if (extra.costText.trim() === '') return
    const known = stall && stall.shipping.some((zone) => zone.id === extra.id)
    put(`ship.${extra.id}`, known ? checkAmount(extra.costText) : ['rule.zoneUnknown'])
  })
  return errors
}
