//! Saving and publishing a merchant's listings: one path for the operator's commands, the
//! merchant's USSD menus and the proposals merchants approve. Records first (with every
//! check [`Merchants`] makes), then the merchant's events under its key through the durable
//! outbox.
//!
//! One stored listing, two vocabularies: every stall goes out as a NIP-15 kind 30017 and one
//! Gamma kind-30406 shipping option per zone, every listed product as a NIP-15 kind 30018 and
//! a Gamma kind-30402 listing ([`crate::proto::gamma_listing`]). With them the merchant's
//! profile (kind 0, saying how to pay through soko) and its NIP-17 DM relay list (kind
//! 10050). [`sync`] works out all of these from the records and queues what changed, and one
//! NIP-09 deletion (`a` coordinates and the `e` ids of their versions) for what is gone, so
//! that every change reaches every form; [`super::published`] remembers what went out.

use std::collections::{BTreeMap, HashMap, HashSet};

use nostr_sdk::hashes::{sha256, Hash};
use nostr_sdk::nips::nip01::Coordinate;
use nostr_sdk::nips::nip09::EventDeletionRequest;
use nostr_sdk::{Event, EventBuilder, EventId, JsonUtil, Kind, PublicKey, Tag, Timestamp};
use sled::Transactional;

use super::merchants::{profile, MerchantStatus};
use super::published::{self, Record};
use super::{MerchantError, Merchants};
use crate::outbound::Publisher;
use crate::proto::gamma_listing::{self, KIND_LISTING, KIND_SHIPPING_OPTION};
use crate::proto::nip15::{Product, Stall};
use crate::proto::nip15::{KIND_PRODUCT, KIND_STALL};
use crate::store::StoreError;
use crate::util::unix_now;

/// Kind of a NIP-17 DM relay list.
pub const KIND_DM_RELAYS: u16 = 10050;

/// The listing kinds [`sync`] publishes and withdraws.
pub const LISTING_KINDS: [u16; 4] = [KIND_STALL, KIND_PRODUCT, KIND_LISTING, KIND_SHIPPING_OPTION];

/// Why a listing was not saved or published.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The registry refused it (explained) or failed.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Signing or queueing the event failed.
    #[error("publishing: {0}")]
    Publish(String),
}

impl From<StoreError> for ListingError {
    fn from(e: StoreError) -> Self {
        Self::Merchant(e.into())
    }
}

/// Saves and publishes a stall (and its shipping options).
pub async fn put_stall(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    stall: &Stall,
) -> Result<EventId, ListingError> {
    merchants.put_stall(merchant, stall)?;
    sync(
        merchants,
        publisher,
        merchant,
        None,
        &[(KIND_STALL, &stall.id)],
        &[],
        GONE,
    )
    .await?
    .id(KIND_STALL, &stall.id)
}

/// Saves and publishes a product (and its Gamma listing).
pub async fn put_product(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    product: &Product,
) -> Result<EventId, ListingError> {
    merchants.put_product(merchant, product)?;
    republish_product(merchants, publisher, merchant, product).await
}

/// Publishes a product as soko holds it, when its record changed on another path: its
/// stock in an order's paid commit, or its return to sale.
pub async fn republish_product(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    product: &Product,
) -> Result<EventId, ListingError> {
    crate::failpoint::crash("listing-republish", merchants.listings_tree());
    sync(
        merchants,
        publisher,
        merchant,
        Some(&product.id),
        &[(KIND_PRODUCT, &product.id)],
        &[],
        GONE,
    )
    .await?
    .id(KIND_PRODUCT, &product.id)
}

/// Deletes a stall or product from soko's records and publishes its deletion: one NIP-09
/// event for both of its forms. Returns the deletion's id.
pub async fn delete(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    kind: u16,
    id: &str,
    reason: &str,
) -> Result<EventId, ListingError> {
    let mut gone = vec![(kind, id.to_owned())];
    match kind {
        KIND_PRODUCT => gone.push((KIND_LISTING, id.to_owned())),
        KIND_STALL => {
            if let Some(stall) = merchants.stall(merchant, id)? {
                gone.extend(stall.shipping.iter().map(|zone| {
                    (
                        KIND_SHIPPING_OPTION,
                        gamma_listing::shipping_option_d(&stall.id, &zone.id),
                    )
                }));
            }
        }
        _ => {}
    }
    merchants.delete_listing(merchant, kind, id)?;
    let scope = (kind == KIND_PRODUCT).then_some(id);
    sync(merchants, publisher, merchant, scope, &[], &gone, reason)
        .await?
        .deletion
        .ok_or_else(|| ListingError::Publish("no deletion was made".to_owned()))
}

/// Publishes the withdrawal of a product the caller took off sale in soko's records (both
/// its forms, in one deletion). Returns the deletion's id.
pub async fn withdraw_product(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    id: &str,
    reason: &str,
) -> Result<EventId, ListingError> {
    let gone = [(KIND_PRODUCT, id.to_owned()), (KIND_LISTING, id.to_owned())];
    sync(merchants, publisher, merchant, Some(id), &[], &gone, reason)
        .await?
        .deletion
        .ok_or_else(|| ListingError::Publish("no deletion was made".to_owned()))
}

/// Brings everything soko publishes for `merchant` in step with its records: on its
/// activation, and for every merchant at start (a no-op when nothing changed).
pub async fn sync_merchant(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
) -> Result<Synced, ListingError> {
    sync(merchants, publisher, merchant, None, &[], &[], GONE).await
}

/// [`sync_merchant`] for every active merchant, at start; one failing does not stop the
/// others. The events are only queued: the outbox's retry pass sends them within seconds,
/// so a start is not held up by relays (after an upgrade, every listing goes out once).
/// Returns how many merchants were brought in step.
pub async fn sync_all(merchants: &Merchants, publisher: &Publisher) -> usize {
    let all = match merchants.all() {
        Ok(all) => all,
        Err(e) => {
            tracing::error!(error = %e, "reading the merchants to publish their listings failed");
            return 0;
        }
    };
    let mut done = 0;
    for (merchant, keys) in all {
        if merchant.status != MerchantStatus::Active {
            continue;
        }
        match queue(
            merchants,
            publisher,
            &keys.public_key(),
            None,
            &[],
            &[],
            GONE,
        )
        .await
        {
            Ok(synced) => {
                done += 1;
                if synced.changed > 0 {
                    tracing::info!(merchant = %merchant.npub, events = synced.changed, "merchant's profile, relay list and listings republished");
                }
            }
            Err(e) => {
                tracing::error!(merchant = %merchant.npub, error = %e, "publishing the merchant's listings failed")
            }
        }
    }
    done
}

/// The reason given when a form disappears because its record changed (a zone dropped).
const GONE: &str = "no longer offered";

/// What [`sync`] left on relays.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    /// The latest event id of every form published, by kind and `d`.
    pub ids: BTreeMap<(u16, String), EventId>,
    /// The deletion queued, if any.
    pub deletion: Option<EventId>,
    /// Events queued.
    pub changed: usize,
    /// The events queued, in the order they are sent.
    queued: Vec<Event>,
}

impl Synced {
    fn id(&self, kind: u16, d: &str) -> Result<EventId, ListingError> {
        self.ids
            .get(&(kind, d.to_owned()))
            .copied()
            .ok_or_else(|| ListingError::Publish(format!("{kind}:{d} was not published")))
    }
}

/// One event soko should have on relays for a merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Desired {
    kind: u16,
    d: String,
    content: String,
    tags: Vec<Vec<String>>,
}

impl Desired {
    fn digest(&self) -> String {
        let bytes = serde_json::to_vec(&(self.kind, &self.content, &self.tags)).unwrap_or_default();
        sha256::Hash::hash(&bytes).to_string()
    }
}

/// Every event soko should have on relays for `merchant`, from its records.
fn desired(
    merchants: &Merchants,
    merchant: &PublicKey,
    relays: &[String],
) -> Result<Vec<Desired>, ListingError> {
    let record = merchants.get(merchant)?;
    if record.status != MerchantStatus::Active {
        return Ok(Vec::new());
    }
    let hex = merchant.to_hex();
    let mut out = vec![Desired {
        kind: 0,
        d: String::new(),
        content: profile(&record).as_json(),
        tags: vec![vec!["payment_preference".to_owned(), "ecash".to_owned()]],
    }];
    if !relays.is_empty() {
        out.push(Desired {
            kind: KIND_DM_RELAYS,
            d: String::new(),
            content: String::new(),
            tags: relays
                .iter()
                .map(|url| vec!["relay".to_owned(), url.clone()])
                .collect(),
        });
    }
    let stalls = merchants.stalls(merchant)?;
    for stall in &stalls {
        out.push(nip15(KIND_STALL, &stall.id, stall)?);
        for zone in &stall.shipping {
            out.push(gamma(
                KIND_SHIPPING_OPTION,
                gamma_listing::shipping_option(stall, zone),
            ));
        }
    }
    for product in merchants.products(merchant)? {
        out.push(nip15_product(&product)?);
        if let Some(stall) = stalls.iter().find(|s| s.id == product.stall_id) {
            out.push(gamma(
                KIND_LISTING,
                gamma_listing::product_listing(&hex, &product, stall),
            ));
        }
    }
    Ok(out)
}

/// The events of one product (a change that touches nothing else: its put, its stock, its
/// hiding or deletion), so that a change costs the same in a shop of any size.
fn desired_product(
    merchants: &Merchants,
    merchant: &PublicKey,
    id: &str,
) -> Result<Vec<Desired>, ListingError> {
    if merchants.get(merchant)?.status != MerchantStatus::Active {
        return Ok(Vec::new());
    }
    let Some(product) = merchants.product(merchant, id)? else {
        return Ok(Vec::new());
    };
    let mut out = vec![nip15_product(&product)?];
    if let Some(stall) = merchants.stall(merchant, &product.stall_id)? {
        out.push(gamma(
            KIND_LISTING,
            gamma_listing::product_listing(&merchant.to_hex(), &product, &stall),
        ));
    }
    Ok(out)
}

fn nip15<T: serde::Serialize>(kind: u16, id: &str, content: &T) -> Result<Desired, ListingError> {
    Ok(Desired {
        kind,
        d: id.to_owned(),
        content: serde_json::to_string(content).map_err(MerchantError::from)?,
        tags: vec![vec!["d".to_owned(), id.to_owned()]],
    })
}

/// A product's 30018: its content without the categories, which are its `t` tags
/// (NIP-15).
fn nip15_product(product: &Product) -> Result<Desired, ListingError> {
    let mut tags = vec![vec!["d".to_owned(), product.id.clone()]];
    tags.extend(
        product
            .categories
            .iter()
            .map(|category| vec!["t".to_owned(), category.clone()]),
    );
    Ok(Desired {
        kind: KIND_PRODUCT,
        d: product.id.clone(),
        content: product.content().map_err(MerchantError::from)?,
        tags,
    })
}

fn gamma(kind: u16, event: gamma_listing::ListingEvent) -> Desired {
    let d = event
        .tags
        .first()
        .and_then(|t| t.get(1))
        .cloned()
        .unwrap_or_default();
    Desired {
        kind,
        d,
        content: event.content,
        tags: event.tags,
    }
}

/// Queues, as `merchant`, every event whose content changed since it was last published
/// (all of the merchant's; with `product`, only that product's two forms) and those in
/// `force`, changed or not; and one deletion of the listings in `gone` and of any listing
/// in that scope published before that its records no longer hold. Records and outbox entries
/// are written in one transaction; the events are sent after it.
pub async fn sync(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    product: Option<&str>,
    force: &[(u16, &str)],
    gone: &[(u16, String)],
    reason: &str,
) -> Result<Synced, ListingError> {
    let synced = queue(merchants, publisher, merchant, product, force, gone, reason).await?;
    for event in &synced.queued {
        publisher.outbox().deliver(event).await?;
    }
    Ok(synced)
}

/// [`sync`] without sending: the events wait in the outbox for its next retry pass.
async fn queue(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    product: Option<&str>,
    force: &[(u16, &str)],
    gone: &[(u16, String)],
    reason: &str,
) -> Result<Synced, ListingError> {
    let keys = publisher
        .keyring()
        .get(merchant)
        .ok_or_else(|| ListingError::Publish(format!("no key for {merchant}")))?;
    let mut relays: Vec<String> = publisher
        .outbox()
        .client()
        .relays()
        .await
        .into_keys()
        .map(|url| url.to_string())
        .collect();
    relays.sort();
    let store = merchants.published();
    let guard = store.lock().lock().await;
    let (wanted, records) = match product {
        None => (
            desired(merchants, merchant, &relays)?,
            store.of(merchant)?.into_iter().collect(),
        ),
        Some(id) => {
            let mut records = HashMap::new();
            for kind in [KIND_PRODUCT, KIND_LISTING] {
                if let Some(record) = store.get(merchant, kind, id)? {
                    records.insert((kind, id.to_owned()), record);
                }
            }
            (desired_product(merchants, merchant, id)?, records)
        }
    };
    let records: HashMap<(u16, String), Record> = records;
    let now = unix_now();
    let mut synced = Synced::default();
    let mut events: Vec<Event> = Vec::new();
    let mut updates: Vec<(Vec<u8>, Record)> = Vec::new();
    let mut present = HashSet::new();
    for item in &wanted {
        let coordinate = (item.kind, item.d.clone());
        present.insert(coordinate.clone());
        let record = records.get(&coordinate).cloned().unwrap_or_default();
        let digest = item.digest();
        let forced = force.iter().any(|(k, d)| *k == item.kind && *d == item.d);
        if !forced && !record.deleted && record.digest == digest {
            if let Some(id) = record.ids.last().and_then(|id| EventId::from_hex(id).ok()) {
                synced.ids.insert(coordinate, id);
                continue;
            }
        }
        let created_at = now.max(record.created_at.saturating_add(1));
        let tags = item
            .tags
            .iter()
            .map(|t| Tag::parse(t.iter().cloned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ListingError::Publish(e.to_string()))?;
        let event = EventBuilder::new(Kind::from(item.kind), item.content.clone())
            .tags(tags)
            .custom_created_at(Timestamp::from(created_at))
            .sign_with_keys(&keys)
            .map_err(|e| ListingError::Publish(e.to_string()))?;
        updates.push((
            published::key(merchant, item.kind, &item.d),
            record.published(&event.id.to_hex(), &digest, created_at),
        ));
        synced.ids.insert(coordinate, event.id);
        events.push(event);
    }
    // What is gone: named by the caller, or published before and no longer in the records.
    let mut withdrawn: Vec<(u16, String)> = gone
        .iter()
        .filter(|c| !present.contains(*c))
        .cloned()
        .collect();
    for (coordinate, record) in &records {
        if !record.deleted
            && LISTING_KINDS.contains(&coordinate.0)
            && !present.contains(coordinate)
            && !withdrawn.contains(coordinate)
        {
            withdrawn.push(coordinate.clone());
        }
    }
    if !withdrawn.is_empty() {
        withdrawn.sort();
        let last = withdrawn
            .iter()
            .filter_map(|c| records.get(c))
            .map(|r| r.created_at)
            .max()
            .unwrap_or(0);
        let created_at = now.max(last.saturating_add(1));
        let ids: Vec<EventId> = withdrawn
            .iter()
            .filter_map(|c| records.get(c))
            .flat_map(|r| r.ids.iter().filter_map(|id| EventId::from_hex(id).ok()))
            .collect();
        let event = EventBuilder::delete(deletion(merchant, &withdrawn, &ids, reason))
            .custom_created_at(Timestamp::from(created_at))
            .sign_with_keys(&keys)
            .map_err(|e| ListingError::Publish(e.to_string()))?;
        for (kind, d) in &withdrawn {
            let record = records
                .get(&(*kind, d.clone()))
                .cloned()
                .unwrap_or_default();
            updates.push((
                published::key(merchant, *kind, d),
                record.withdrawn(created_at),
            ));
        }
        synced.deletion = Some(event.id);
        events.push(event);
    }
    synced.changed = events.len();
    if events.is_empty() {
        return Ok(synced);
    }
    let outbox = publisher.outbox();
    let mut encoded = Vec::with_capacity(updates.len());
    for (key, record) in &updates {
        encoded.push((key.clone(), store.tree().encode(record)?));
    }
    let staged = events
        .iter()
        .map(|event| outbox.stage(event))
        .collect::<Result<Vec<_>, _>>()?;
    (store.tree().raw(), outbox.raw())
        .transaction(|(records, queue)| {
            for (key, value) in &encoded {
                records.insert(key.as_slice(), value.as_slice())?;
            }
            for entry in &staged {
                entry.insert(queue)?;
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => {
                ListingError::from(StoreError::from(e))
            }
            sled::transaction::TransactionError::Abort(never) => match never {},
        })?;
    drop(guard);
    synced.queued = events;
    Ok(synced)
}

/// The NIP-09 deletion of a merchant's listings: their coordinates (`a` tags, every version
/// of a replaceable event, what Gamma clients and relays read) and the ids of the versions
/// soko published (`e` tags, all that NIP-15 clients read).
pub fn deletion(
    merchant: &PublicKey,
    coordinates: &[(u16, String)],
    ids: &[EventId],
    reason: &str,
) -> EventDeletionRequest {
    EventDeletionRequest::new()
        .ids(ids.iter().copied())
        .coordinates(
            coordinates
                .iter()
                .map(|(kind, d)| Coordinate::new(Kind::from(*kind), *merchant).identifier(d)),
        )
        .reason(reason)
}
