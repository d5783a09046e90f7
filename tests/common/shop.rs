//! Mama Duka's mango shop: the merchant most tests sell from.

use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::Config;

use super::TestSoko;

/// A managed merchant, by key and by npub.
pub struct Shop {
    pub merchant: PublicKey,
    pub npub: String,
}

impl Shop {
    /// The operator's order command `cmd` (`order_refund`, `order_dispute`, …) on this
    /// shop's order `number`.
    pub async fn order(&self, soko: &TestSoko, cmd: &str, number: u64) -> soko::proto::Response {
        super::operator(soko, cmd, json!({"merchant": self.npub, "order": number})).await
    }

    /// The operator delivers this shop's order `number` with the buyer's `code`.
    pub async fn deliver(&self, soko: &TestSoko, number: u64, code: &str) -> soko::proto::Response {
        let args = json!({"merchant": self.npub, "order": number, "code": code});
        super::operator(soko, "order_deliver", args).await
    }
}

/// What to stock Mama Duka's shop with. The default is what most tests sell: 3 mangoes at
/// 500 sat, +10 sat shipping each on top of the `nairobi` zone's 100, paid out to soko's
/// balance. One mango then costs 610 sat, two 1120.
pub struct Mangoes {
    /// Mangoes in stock.
    pub quantity: u64,
    /// Shipping per mango on top of the zone's cost; `None` lists the product without it.
    pub shipping_each: Option<u64>,
    /// The merchant's payout address, if it has one.
    pub lightning_address: Option<String>,
}

impl Default for Mangoes {
    fn default() -> Self {
        Self {
            quantity: 3,
            shipping_each: Some(10),
            lightning_address: None,
        }
    }
}

impl Mangoes {
    /// `quantity` mangoes, the rest as by default.
    pub fn stock(quantity: u64) -> Self {
        Self {
            quantity,
            ..Self::default()
        }
    }

    /// Adds Mama Duka to the soko `config` names and lists the stall and the mangoes, the way
    /// `soko merchant …` does (so it works on a soko run as a child process too).
    pub async fn open(self, config: &Config) -> Shop {
        let added = call(
            config,
            "merchant_add",
            json!({"name": "Mama Duka", "lightning_address": self.lightning_address}),
        )
        .await;
        let npub = added["npub"].as_str().expect("npub").to_owned();
        self.list(config, &npub).await;
        Shop {
            merchant: PublicKey::parse(&npub).expect("npub"),
            npub,
        }
    }

    /// Lists the stall and the mangoes for the merchant `npub`.
    pub async fn list(self, config: &Config, npub: &str) {
        call(
            config,
            "stall_put",
            json!({"merchant": npub, "stall": stall()}),
        )
        .await;
        let mut mango = json!({"id":"mango","stall_id":"duka","name":"Mango","currency":"sat",
                               "price":500,"quantity":self.quantity});
        if let Some(cost) = self.shipping_each {
            mango["shipping"] = json!([{"id":"nairobi","cost":cost}]);
        }
        call(
            config,
            "product_put",
            json!({"merchant": npub, "product": mango}),
        )
        .await;
    }
}

/// Mama Duka's stall: `sat`, one zone `nairobi` at 100 sat.
pub fn stall() -> Value {
    json!({"id":"duka","name":"Mama Duka","currency":"sat",
           "shipping":[{"id":"nairobi","cost":100,"regions":["KE"]}]})
}

/// Mama Duka with the default mangoes on `soko`.
pub async fn mango_shop(soko: &TestSoko) -> Shop {
    Mangoes::default().open(&soko.config).await
}

/// Runs an operator command, asserting that soko accepts it; returns its result.
async fn call(config: &Config, cmd: &str, args: Value) -> Value {
    let answer = soko::operator::call(config, cmd, args)
        .await
        .expect("soko answers");
    assert!(answer.ok, "{cmd}: {answer:?}");
    answer.result.unwrap_or_default()
}

/// A merchant added with a phone, waiting for its first dial.
pub struct Pending {
    pub merchant: PublicKey,
    pub npub: String,
    /// The one-time activation code as `merchant_add` shows it (in groups).
    pub code: String,
}

impl Pending {
    /// Key, npub and the activation code as typed on a keypad (digits only).
    pub fn typed(self) -> (PublicKey, String, String) {
        let digits = self.code.replace(' ', "");
        (self.merchant, self.npub, digits)
    }
}

/// `merchant_add` of Mama Duka with `phone` (and a payout address): a pending merchant with
/// the activation code shown once.
pub async fn pending_merchant(
    soko: &TestSoko,
    phone: &str,
    lightning_address: Option<&str>,
) -> Pending {
    let added = super::operator(
        soko,
        "merchant_add",
        json!({"name":"Mama Duka","phone":phone,"lightning_address":lightning_address}),
    )
    .await;
    assert!(added.ok, "{added:?}");
    let result = added.result.expect("merchant added");
    assert_eq!(result["status"], "pending", "{result}");
    let npub = result["npub"].as_str().expect("npub").to_owned();
    let code = result["activation_code"]
        .as_str()
        .expect("an activation code for a merchant with a phone")
        .to_owned();
    Pending {
        merchant: PublicKey::parse(&npub).expect("npub"),
        npub,
        code,
    }
}

/// A Gamma kind-16 message from `buyer` to the shop, gift-wrapped as Plebeian Market does.
pub async fn send_gamma(buyer: &super::User, shop: &Shop, tags: &[&[&str]], content: &str) {
    let mut all: Vec<Vec<String>> = vec![vec!["p".into(), shop.merchant.to_hex()]];
    all.extend(
        tags.iter()
            .map(|t| t.iter().map(|p| (*p).to_owned()).collect()),
    );
    let wrap = soko::outbound::wrap_tagged(
        &buyer.keys,
        shop.merchant,
        soko::proto::gamma::KIND_ORDER,
        &all,
        content,
    )
    .await
    .expect("wrapped");
    let out = buyer.publish(&wrap).await;
    assert!(!out.success.is_empty(), "wrap accepted: {:?}", out.failed);
}

/// The 8-digit delivery code in a DM, if there is one.
pub fn code_in(dm: &super::Received) -> Option<String> {
    dm.content
        .split_whitespace()
        .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

/// A payee whose invoices the dev mint's fake Lightning never settles (it reports them
/// pending, paying and checking): an unclear payout, as a hold invoice makes one.
pub async fn pending_payee() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use axum::routing::get;
    use cdk::nuts::MeltQuoteState;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("the payee listens");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("bound").port()
    );
    let pay_request = json!({
        "callback": format!("{base}/lnurlp/hold/callback"),
        "minSendable": 1_000, "maxSendable": 100_000_000, "tag": "payRequest",
        "metadata": "[[\"text/plain\",\"never settles\"]]",
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/lnurlp/hold",
            get(move || {
                let body = pay_request.clone();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/lnurlp/hold/callback",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let msat: u64 = q["amount"].parse().expect("amount in msat");
                    let hold = cdk_fake_wallet::FakeInvoiceDescription {
                        pay_invoice_state: MeltQuoteState::Pending,
                        check_payment_state: MeltQuoteState::Pending,
                        pay_err: false,
                        check_err: false,
                    };
                    let invoice = cdk_fake_wallet::create_fake_invoice(
                        msat,
                        serde_json::to_string(&hold).expect("json"),
                    );
                    axum::Json(json!({"pr": invoice.to_string(), "routes": []}))
                },
            ),
        );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("the payee serves");
    });
    let url = format!("{base}/.well-known/lnurlp/hold");
    (lnurl::lnurl::LnUrl::from_url(url).encode(), server)
}
