//! NIP-15 checkout with escrow, end to end on real parts: a buyer's order DM to a managed
//! merchant → invoice from the in-process mint (its fake Lightning backend settles it) →
//! paid, funds held, delivery code DM → the merchant presents the code → balance credited.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod cycle;
mod gamma;
mod intake;
mod lifecycle;
mod payouts;
mod refunds;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::escrow::EscrowState;
use soko::money::Sats;

fn order(id: &str, quantity: i64, shipping: &str) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "contact": {"nostr": "npub1x"}, "items": [{"product_id": "mango", "quantity": quantity}],
           "shipping_id": shipping})
    .to_string()
}

async fn next_json(buyer: &mut User) -> Value {
    buyer.next_dm(REPLY_TIMEOUT).await.expect("a DM").json()
}

/// Waits for the code DM (plain text) and returns the 8 digits.
async fn delivery_code(buyer: &mut User) -> String {
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code DM");
    code_in(&dm).expect("8 digits in the code DM")
}
