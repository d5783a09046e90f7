// The form checks against the cases soko's own rules decide (src/market/merchants/rules.rs,
// src/agents/desk.rs, src/proto/agents.rs): what the page lets through, soko must be able
// to accept, and what soko refuses for its form, the page catches first.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as rules from '../src/rules.js'

const stall = (over = {}) => ({ id: 'duka', name: 'Duka', currency: 'sat', shipping: [], ...over })
const zone = (id, costText) => ({ id, costText })
const product = (over = {}) => ({ id: 'mango', name: 'Mango', priceText: '500', quantityText: '10', images: [], shipping: [], ...over })
const published = { id: 'duka', currency: 'sat', shipping: [{ id: 'nairobi', cost: 100 }] }

test('ids are 1 to 64 bytes, as soko counts them', () => {
  assert.equal(rules.checkId('a'.repeat(64)), null)
  assert.deepEqual(rules.checkId('a'.repeat(65)), ['rule.id'])
  assert.deepEqual(rules.checkId(''), ['rule.id'])
  // 32 two-byte characters are 64 bytes; 33 are too many for soko.
  assert.equal(rules.checkId('é'.repeat(32)), null)
  assert.deepEqual(rules.checkId('é'.repeat(33)), ['rule.id'])
})

test('a currency is sat or a three-letter code', () => {
  for (const ok of ['sat', 'SAT', 'KES', 'usd']) assert.equal(rules.checkCurrency(ok), null, ok)
  for (const bad of ['bitcoin', 'K3S', 'KE', '', 'sats']) assert.deepEqual(rules.checkCurrency(bad), ['rule.currency'], bad)
})

test('phones are + and 7 to 15 digits; shop names 1 to 64 characters', () => {
  assert.equal(rules.checkPhone('+2547123'), null)
  assert.equal(rules.checkPhone('+254712345678901'), null)
  for (const bad of ['254712345678', '+254 712', '+123456', '+2547123456789012']) assert.deepEqual(rules.checkPhone(bad), ['rule.phone'], bad)
  assert.equal(rules.checkShopName('Mama Duka'), null)
  assert.deepEqual(rules.checkShopName('   '), ['rule.shopName'])
  assert.deepEqual(rules.checkShopName('x'.repeat(65)), ['rule.shopName'])
})

test('invite codes: 16 characters, dashes and spaces aside, any case', () => {
  assert.equal(rules.checkInvite('7kq2-m9xd 4hwa-0rtc'), null)
  assert.deepEqual(rules.checkInvite('7KQ2-M9XD-4HWA'), ['rule.invite'])
})

test('a stall: a name, a currency, zones with ids and costs of at least 0', () => {
  assert.deepEqual(rules.checkStall(stall({ shipping: [zone('nairobi', '100')] })), {})
  assert.deepEqual(Object.keys(rules.checkStall(stall({ name: ' ' }))), ['name'])
  assert.deepEqual(Object.keys(rules.checkStall(stall({ shipping: [zone('', '1')] }))), ['zone0.id'])
  assert.deepEqual(Object.keys(rules.checkStall(stall({ shipping: [zone('a', '-1')] }))), ['zone0.cost'])
  assert.deepEqual(Object.keys(rules.checkStall(stall({ shipping: [zone('a', 'x')] }))), ['zone0.cost'])
})

test('a product: a published stall, a price of at least 0, only the stall zones', () => {
  assert.deepEqual(rules.checkProduct(product({ shipping: [zone('nairobi', '10')] }), published), {})
  assert.deepEqual(Object.keys(rules.checkProduct(product(), undefined)), ['stall'])
  assert.deepEqual(Object.keys(rules.checkProduct(product({ priceText: '-5' }), published)), ['price'])
  assert.deepEqual(Object.keys(rules.checkProduct(product({ quantityText: '2.5' }), published)), ['quantity'])
  assert.deepEqual(Object.keys(rules.checkProduct(product({ shipping: [zone('mombasa', '10')] }), published)), ['ship.mombasa'])
  assert.deepEqual(Object.keys(rules.checkProduct(product({ images: ['ftp://x/y.jpg'] }), published)), ['images'])
  assert.equal(rules.amount('0.5'), 0.5)
  assert.ok(Number.isNaN(rules.amount('1e3')))
})

test('categories: comma-separated, trimmed, lower case, merged; at most 10 of 1 to 32 characters', () => {
  assert.deepEqual(rules.categories(' Fruit, organic,FRUIT, ,Matunda ya Pwani,'), ['fruit', 'organic', 'matunda ya pwani'])
  assert.deepEqual(rules.categories(''), [])
  assert.equal(rules.checkCategories(rules.categories('Ä'.repeat(32))), null)
  assert.deepEqual(rules.checkCategories(['x'.repeat(33)]), ['rule.category', { category: 'x'.repeat(33), max: 32 }])
  assert.deepEqual(rules.checkCategories(['tab\there']), ['rule.category', { category: 'tab\there', max: 32 }])
  const eleven = Array.from({ length: 11 }, (_, n) => `c${n}`)
  assert.deepEqual(rules.checkCategories(eleven), ['rule.categories', { max: 10, n: 11 }])
  assert.equal(rules.checkCategories(eleven.slice(0, 10)), null)
  assert.deepEqual(Object.keys(rules.checkProduct(product({ categories: eleven }), published)), ['categories'])
})
