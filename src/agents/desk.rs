//! The agents' desk: what agents do for merchants (onboard, propose, withdraw, list) and
//! what merchants answer over USSD (approve, reject, unlink). Every change to a merchant
//! goes through the domain APIs the operator's commands use ([`Merchants`] and
//! [`crate::market::listing`]); this module only decides who may do what.
//!
//! Rules:
//! - Only registered agents act here (`not_an_agent`).
//! - An agent proposes only to merchants it is linked to (`not_linked`); nothing is stored
//!   otherwise. Linking happens when the agent onboards a new phone, or, for a phone that
//!   is a merchant's already, when that merchant approves the agent's link request: knowing
//!   a phone number must not hand anyone a shop.
//! - Decisions are serialised (one lock) and go through the pure
//!   [`proposals::transition`]: a proposal is approved once, and the approval re-checks the
//!   link, so a proposal of an agent unlinked meanwhile is withdrawn, never applied.

use std::sync::Arc;

use nostr_sdk::{PublicKey, ToBech32};

use super::links::Links;
use super::proposals::{self, Decision, Proposal, Proposals, Proposed, Transition};
use super::users::Users;
use crate::clock::Clock;
use crate::market::listing::{self, ListingError};
use crate::market::{Merchant, MerchantError, MerchantRefusal, MerchantStatus, Merchants, Rates};
use crate::outbound::{Publisher, Scheme};
use crate::proto::agents::{
    AgentMerchants, AgentNotice, AgentNoticeBody, LinkState, LinkedMerchant, MerchantActiveNotice,
    Onboarded, ProposalDecided, ProposalKind, ProposalStatus, ProposalView, Role, UnlinkedNotice,
};
use crate::proto::nip15::Product;
use crate::store::StoreError;

/// Why the desk did not do something.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// Not done, for a reason the agent or merchant may read.
    #[error(transparent)]
    Refused(#[from] DeskRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry refused the content (`Invalid`, explained) or failed.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Publishing failed.
    #[error("publishing: {0}")]
    Publish(String),
}

/// What the desk turns down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeskRefusal {
    /// An agent command from someone who is not a registered agent.
    #[error("only registered agents may do this; you are {0}")]
    NotAnAgent(Role),
    /// The agent is not linked to the merchant it names.
    #[error("you are not linked to this merchant: onboard it with merchant_onboard (its owner approves the link over USSD if the phone is registered already)")]
    NotLinked,
    /// The agent has no proposal with this id.
    #[error("you have no proposal {0}")]
    UnknownProposal(u64),
    /// Withdrawing a proposal the merchant decided already.
    #[error("proposal {id} is {} already", status.as_str())]
    AlreadyDecided {
        /// The proposal.
        id: u64,
        /// What the merchant decided.
        status: ProposalStatus,
    },
    /// The merchant decides a proposal that is not there (any more).
    #[error("that proposal is gone")]
    ProposalGone,
    /// The merchant decides a proposal decided otherwise before.
    #[error("that proposal was {} already", .0.as_str())]
    DecidedOtherwise(ProposalStatus),
    /// Approving a proposal of an agent that has been unlinked since.
    #[error("that agent is no longer linked to your shop")]
    AgentUnlinked,
    /// A link proposed as content.
    #[error("links are asked for with merchant_onboard")]
    LinkByOnboarding,
    /// A stall in a currency soko cannot price.
    #[error("soko has no exchange rate for {currency:?}; use one of: {known}")]
    NoRate {
        /// The stall's currency.
        currency: String,
        /// The currencies soko prices, comma-separated.
        known: String,
    },
}

impl From<ListingError> for DeskError {
    fn from(e: ListingError) -> Self {
        match e {
            ListingError::Merchant(e) => e.into(),
            ListingError::Publish(why) => Self::Publish(why),
        }
    }
}

/// The desk; cheap to clone.
#[derive(Debug, Clone)]
pub struct Desk {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    users: Users,
    links: Links,
    proposals: Proposals,
    merchants: Merchants,
    publisher: Publisher,
    rates: Rates,
    clock: Clock,
    decisions: tokio::sync::Mutex<()>,
}

impl Desk {
    /// A desk over the agents' stores and the merchant registry; `rates` are the fiat
    /// currencies soko can price (a proposed stall must use `sat` or one of them).
    pub fn new(
        users: Users,
        links: Links,
        proposals: Proposals,
        merchants: Merchants,
        publisher: Publisher,
        rates: Rates,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                users,
                links,
                proposals,
                merchants,
                publisher,
                rates,
                clock,
                decisions: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The links.
    pub fn links(&self) -> &Links {
        &self.inner.links
    }

    /// The proposals.
    pub fn proposals(&self) -> &Proposals {
        &self.inner.proposals
    }

    /// Refuses anyone but a registered agent.
    pub fn require_agent(&self, sender: &PublicKey) -> Result<(), DeskError> {
        match self.inner.users.role(sender)? {
            Role::Agent => Ok(()),
            role => Err(DeskRefusal::NotAnAgent(role).into()),
        }
    }

    /// Onboards the merchant with this phone: a new pending merchant linked to `agent`, or,
    /// for a phone that is a merchant's already, a link request for that merchant.
    pub fn onboard(
        &self,
        agent: &PublicKey,
        phone: &str,
        name: &str,
    ) -> Result<Onboarded, DeskError> {
        self.require_agent(agent)?;
        let inner = &self.inner;
        if let Some(merchant) = inner.merchants.by_phone(phone)? {
            return self.request_link(agent, &merchant);
        }
        let (merchant, keys) = match inner.merchants.add_for_agent(name, phone, agent) {
            Ok(added) => added,
            Err(MerchantError::Refused(MerchantRefusal::PhoneTaken)) => {
                // Another onboarding took the phone between the lookup and the add.
                if let Some(merchant) = inner.merchants.by_phone(phone)? {
                    return self.request_link(agent, &merchant);
                }
                return Err(MerchantError::Refused(MerchantRefusal::PhoneTaken).into());
            }
            Err(e) => return Err(e.into()),
        };
        // A crash here leaves the merchant unlinked; onboarding again restores the link
        // (see `request_link`).
        inner.publisher.keyring().add(keys.clone());
        let link = inner
            .links
            .link(agent, &keys.public_key(), self.inner.clock.now())?;
        let code = inner.merchants.issue_activation(&keys.public_key())?;
        tracing::info!(merchant = %merchant.npub, "agent onboarded a merchant (pending USSD)");
        let mut onboarded = linked(merchant, link.linked_at);
        onboarded.activation_code = Some(code.reveal());
        Ok(onboarded)
    }

    /// The agent's own pending merchant, onboarded again: a crash or a lost message may have
    /// kept the activation code from it, so a new one replaces the old.
    fn reissued(
        &self,
        agent: &PublicKey,
        merchant: &PublicKey,
        shop: Merchant,
        linked_at: u64,
    ) -> Result<Onboarded, DeskError> {
        let merchants = &self.inner.merchants;
        let mut onboarded = linked(shop, linked_at);
        let own_pending = onboarded
            .merchant
            .as_ref()
            .is_some_and(|m| m.status == status_name(MerchantStatus::Pending))
            && merchants.onboarded_by(merchant)? == Some(*agent);
        if own_pending {
            onboarded.activation_code = Some(merchants.issue_activation(merchant)?.reveal());
        }
        Ok(onboarded)
    }

    fn request_link(
        &self,
        agent: &PublicKey,
        merchant: &PublicKey,
    ) -> Result<Onboarded, DeskError> {
        let inner = &self.inner;
        let shop = inner.merchants.get(merchant)?;
        if let Some(link) = inner.links.get(agent, merchant)? {
            return self.reissued(agent, merchant, shop, link.linked_at);
        }
        // This agent created the merchant and a crash came before the link was written: the
        // link is its own. Only while the merchant is pending, since an active merchant may
        // have unlinked the agent on purpose (unlinking needs the USSD menus).
        if shop.status == MerchantStatus::Pending
            && inner.merchants.onboarded_by(merchant)? == Some(*agent)
        {
            let link = inner.links.link(agent, merchant, self.inner.clock.now())?;
            tracing::info!(merchant = %shop.npub, "an interrupted onboarding's link restored");
            return self.reissued(agent, merchant, shop, link.linked_at);
        }
        let waiting = inner
            .proposals
            .pending_for(merchant)?
            .into_iter()
            .find(|p| p.agent == *agent && p.proposed == Proposed::Link);
        let proposal = match waiting {
            Some(proposal) => proposal,
            None => inner
                .proposals
                .add(merchant, agent, Proposed::Link, self.inner.clock.now())?,
        };
        tracing::info!(
            proposal = proposal.id,
            "link requested for a registered phone"
        );
        Ok(Onboarded {
            link: LinkState::Requested,
            merchant: None,
            proposal: Some(proposal.id),
            activation_code: None,
        })
    }

    /// Records a stall, product or deletion proposal after the checks the operator's
    /// commands make; `merchant` must be linked to `agent`.
    pub fn propose(
        &self,
        agent: &PublicKey,
        merchant: &PublicKey,
        proposed: Proposed,
    ) -> Result<ProposalView, DeskError> {
        self.require_agent(agent)?;
        self.require_link(agent, merchant)?;
        self.check(merchant, &proposed)?;
        let proposal =
            self.inner
                .proposals
                .add(merchant, agent, proposed, self.inner.clock.now())?;
        tracing::info!(proposal = proposal.id, kind = ?proposal.proposed.kind(), "proposal recorded");
        Ok(self.view(&proposal, true))
    }

    /// [`Self::propose`] of a product, with its categories: those given, or (none given)
    /// those the product has now, so that an update of its price keeps them.
    pub fn propose_product(
        &self,
        agent: &PublicKey,
        merchant: &PublicKey,
        mut product: Product,
        categories: Option<Vec<String>>,
    ) -> Result<ProposalView, DeskError> {
        // Agent and link first: nothing about an unlinked merchant's products is read.
        self.require_agent(agent)?;
        self.require_link(agent, merchant)?;
        product.categories =
            self.inner
                .merchants
                .categories_for(merchant, &product.id, categories.as_deref())?;
        self.propose(agent, merchant, Proposed::Product(product))
    }

    /// The agent withdraws one of its pending proposals.
    pub fn withdraw(&self, agent: &PublicKey, id: u64) -> Result<ProposalView, DeskError> {
        self.require_agent(agent)?;
        let unknown = || DeskRefusal::UnknownProposal(id);
        let proposal = self.inner.proposals.get(id)?.ok_or_else(unknown)?;
        if proposal.agent != *agent {
            return Err(unknown().into());
        }
        let (step, proposal) = self
            .inner
            .proposals
            .decide(id, Decision::Withdraw, self.inner.clock.now(), None)?
            .ok_or_else(unknown)?;
        if let Transition::Decided(status) = step {
            return Err(DeskRefusal::AlreadyDecided { id, status }.into());
        }
        let linked = self.inner.links.is_linked(agent, &proposal.merchant)?;
        Ok(self.view(&proposal, linked))
    }

    /// The agent's linked merchants and its proposals to them (and its link requests),
    /// newest first. Nothing about merchants it is not linked to.
    pub fn overview(&self, agent: &PublicKey) -> Result<AgentMerchants, DeskError> {
        self.require_agent(agent)?;
        let inner = &self.inner;
        let mut merchants = Vec::new();
        let mut linked = Vec::new();
        for (merchant, link) in inner.links.merchants_of(agent)? {
            let Ok(shop) = inner.merchants.get(&merchant) else {
                continue;
            };
            linked.push(merchant);
            merchants.push(LinkedMerchant {
                npub: shop.npub,
                pubkey: shop.pubkey,
                name: shop.name,
                status: status_name(shop.status).to_owned(),
                linked_at: link.linked_at,
            });
        }
        let mut proposals: Vec<ProposalView> = inner
            .proposals
            .of_agent(agent)?
            .iter()
            .filter_map(|p| {
                let is_linked = linked.contains(&p.merchant);
                // A link request shows without its merchant until approved; other
                // proposals only while the agent is linked.
                (is_linked || p.proposed == Proposed::Link).then(|| self.view(p, is_linked))
            })
            .collect();
        proposals.reverse();
        Ok(AgentMerchants {
            merchants,
            proposals,
        })
    }

    /// The proposals waiting for `merchant`, oldest first: link requests, and the others
    /// while their agent is linked (one recorded as its agent was being unlinked is left
    /// out, and withdrawn if anyone tries to approve it).
    pub fn pending_for(&self, merchant: &PublicKey) -> Result<Vec<Proposal>, DeskError> {
        let mut pending = Vec::new();
        for proposal in self.inner.proposals.pending_for(merchant)? {
            if self.open(merchant, &proposal)? {
                pending.push(proposal);
            }
        }
        Ok(pending)
    }

    /// A pending proposal to `merchant`, as [`Self::pending_for`] lists them.
    pub fn pending(&self, merchant: &PublicKey, id: u64) -> Result<Option<Proposal>, DeskError> {
        let Some(proposal) = self
            .inner
            .proposals
            .get(id)?
            .filter(|p| p.merchant == *merchant && p.status == ProposalStatus::Pending)
        else {
            return Ok(None);
        };
        Ok(self.open(merchant, &proposal)?.then_some(proposal))
    }

    /// True when the merchant may still decide this pending proposal.
    fn open(&self, merchant: &PublicKey, proposal: &Proposal) -> Result<bool, DeskError> {
        if proposal.proposed == Proposed::Link {
            return Ok(true);
        }
        Ok(self.inner.links.is_linked(&proposal.agent, merchant)?)
    }

    /// How merchants see an agent: its registration name, or a short npub.
    pub fn agent_label(&self, agent: &PublicKey) -> String {
        match self.inner.users.get(agent) {
            Ok(Some(user)) => user.name.unwrap_or_else(|| short_npub(agent)),
            _ => short_npub(agent),
        }
    }

    /// The merchant approves proposal `id`: applied through the listing domain API,
    /// recorded, and the agent told.
    /// Returns what kind of proposal it was; approving it again changes nothing.
    pub async fn approve(&self, merchant: &PublicKey, id: u64) -> Result<ProposalKind, DeskError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.decisions.lock().await;
        let Some(proposal) = self.own(merchant, id)? else {
            return Err(DeskRefusal::ProposalGone.into());
        };
        match proposals::transition(proposal.status, Decision::Approve) {
            Transition::Already => return Ok(proposal.proposed.kind()),
            Transition::Decided(status) => return Err(DeskRefusal::DecidedOtherwise(status).into()),
            Transition::To(_) => {}
        }
        let agent = proposal.agent;
        let now = self.inner.clock.now();
        if proposal.proposed != Proposed::Link && !inner.links.is_linked(&agent, merchant)? {
            inner.proposals.decide(id, Decision::Withdraw, now, None)?;
            return Err(DeskRefusal::AgentUnlinked.into());
        }
        let applied = match &proposal.proposed {
            Proposed::Link => inner
                .links
                .link(&agent, merchant, now)
                .map(|_| None)
                .map_err(DeskError::from),
            Proposed::Stall(stall) => {
                listing::put_stall(&inner.merchants, &inner.publisher, merchant, stall)
                    .await
                    .map(Some)
                    .map_err(DeskError::from)
            }
            Proposed::Product(product) => {
                listing::put_product(&inner.merchants, &inner.publisher, merchant, product)
                    .await
                    .map(Some)
                    .map_err(DeskError::from)
            }
            Proposed::Delete { kind, id } => listing::delete(
                &inner.merchants,
                &inner.publisher,
                merchant,
                *kind,
                id,
                "deleted by the merchant",
            )
            .await
            .map(Some)
            .map_err(DeskError::from),
        };
        // A refusal (the content no longer passes the registry's rules) leaves the
        // proposal pending: the merchant can reject it.
        let event_id = applied?.map(|e| e.to_hex());
        let decided = inner
            .proposals
            .decide(id, Decision::Approve, now, event_id)?;
        if let Some((Transition::To(_), proposal)) = decided {
            tracing::info!(proposal = id, kind = ?proposal.proposed.kind(), "proposal approved");
            self.tell(&agent, merchant, &proposal).await;
        }
        Ok(proposal.proposed.kind())
    }

    /// The merchant rejects proposal `id`; the agent is told.
    /// Returns what kind of proposal it was; rejecting it again changes nothing.
    pub async fn reject(&self, merchant: &PublicKey, id: u64) -> Result<ProposalKind, DeskError> {
        let _one_at_a_time = self.inner.decisions.lock().await;
        if self.own(merchant, id)?.is_none() {
            return Err(DeskRefusal::ProposalGone.into());
        }
        let Some((step, proposal)) =
            self.inner
                .proposals
                .decide(id, Decision::Reject, self.inner.clock.now(), None)?
        else {
            return Err(DeskRefusal::ProposalGone.into());
        };
        match step {
            Transition::To(_) => {
                self.tell(&proposal.agent, merchant, &proposal).await;
                Ok(proposal.proposed.kind())
            }
            Transition::Already => Ok(proposal.proposed.kind()),
            Transition::Decided(status) => Err(DeskRefusal::DecidedOtherwise(status).into()),
        }
    }

    /// Activates a pending merchant whose owner finished onboarding, and tells every agent
    /// linked to it (a `merchant_active` notice). The notices are queued in the outbox in
    /// the activation's own transaction and sent after it: a crash loses none and a
    /// retried or racing activation repeats none. True when this call activated it.
    pub async fn activate(&self, merchant: &PublicKey) -> Result<bool, DeskError> {
        let inner = &self.inner;
        let shop = inner.merchants.get(merchant)?;
        if shop.status != MerchantStatus::Pending {
            return Ok(false);
        }
        let notice = AgentNotice {
            v: 1,
            body: AgentNoticeBody::MerchantActive(MerchantActiveNotice {
                merchant: npub_of(merchant),
                shop: shop.name,
            }),
        };
        let content = serde_json::to_string(&notice).map_err(MerchantError::from)?;
        let publisher = &inner.publisher;
        let bot = publisher.keyring().bot().public_key();
        let mut events = Vec::new();
        for (agent, _) in inner.links.agents_of(merchant)? {
            events.push(
                publisher
                    .seal_dm(&bot, agent, Scheme::Nip17, &content)
                    .await
                    .map_err(|e| DeskError::Publish(e.to_string()))?,
            );
        }
        let outbox = publisher.outbox();
        let staged = events
            .iter()
            .map(|event| outbox.stage(event))
            .collect::<Result<Vec<_>, _>>()?;
        if inner
            .merchants
            .activate_with_notices(merchant, outbox.raw(), &staged)?
            .is_none()
        {
            return Ok(false);
        }
        for event in &events {
            // Queued already: the outbox's retry pass sends what fails now.
            if let Err(e) = outbox.deliver(event).await {
                tracing::warn!(error = %e, "could not send an agent its merchant_active notice yet");
            }
        }
        Ok(true)
    }

    /// The agents linked to `merchant`, oldest link first, with their labels.
    pub fn agents_of(&self, merchant: &PublicKey) -> Result<Vec<(PublicKey, String)>, DeskError> {
        Ok(self
            .inner
            .links
            .agents_of(merchant)?
            .into_iter()
            .map(|(agent, _)| (agent, self.agent_label(&agent)))
            .collect())
    }

    /// The merchant unlinks `agent`: the link goes, and the agent's pending proposals to
    /// the merchant are withdrawn. True when there was a link.
    pub async fn unlink(&self, merchant: &PublicKey, agent: &PublicKey) -> Result<bool, DeskError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.decisions.lock().await;
        let had = inner.links.unlink(agent, merchant)?;
        let now = self.inner.clock.now();
        let mut withdrawn = Vec::new();
        for proposal in inner.proposals.pending_for(merchant)? {
            if proposal.agent == *agent {
                inner
                    .proposals
                    .decide(proposal.id, Decision::Withdraw, now, None)?;
                withdrawn.push(proposal.id);
            }
        }
        if had {
            tracing::info!(merchant = %merchant, "merchant unlinked an agent");
            let body = AgentNoticeBody::Unlinked(UnlinkedNotice {
                merchant: merchant.to_bech32().unwrap_or_else(|_| merchant.to_hex()),
                withdrawn,
            });
            self.notify(agent, body).await;
        }
        Ok(had)
    }

    /// A pending proposal of this merchant.
    fn own(&self, merchant: &PublicKey, id: u64) -> Result<Option<Proposal>, DeskError> {
        Ok(self
            .inner
            .proposals
            .get(id)?
            .filter(|p| p.merchant == *merchant))
    }

    fn require_link(&self, agent: &PublicKey, merchant: &PublicKey) -> Result<(), DeskError> {
        if self.inner.links.is_linked(agent, merchant)? {
            return Ok(());
        }
        Err(DeskRefusal::NotLinked.into())
    }

    /// The operator's rules for the content, checked now (and again on approval).
    fn check(&self, merchant: &PublicKey, proposed: &Proposed) -> Result<(), DeskError> {
        let merchants = &self.inner.merchants;
        match proposed {
            Proposed::Link => Err(DeskRefusal::LinkByOnboarding.into()),
            Proposed::Stall(stall) => {
                merchants.validate_stall(stall)?;
                // Beyond the operator's rule (any three-letter code): a stall an agent sets
                // up must be one soko can price, or none of its products could be ordered.
                let currency = stall.currency.to_ascii_uppercase();
                if currency == "SAT" || self.inner.rates.0.contains_key(&currency) {
                    return Ok(());
                }
                let mut known: Vec<&str> = self.inner.rates.0.keys().map(String::as_str).collect();
                known.sort_unstable();
                known.insert(0, "sat");
                Err(DeskRefusal::NoRate {
                    currency: stall.currency.clone(),
                    known: known.join(", "),
                }
                .into())
            }
            Proposed::Product(product) => merchants
                .validate_product(merchant, product)
                .map(|_| ())
                .map_err(Into::into),
            Proposed::Delete { kind, id } => Ok(merchants.validate_deletion(merchant, *kind, id)?),
        }
    }

    fn view(&self, proposal: &Proposal, show_merchant: bool) -> ProposalView {
        ProposalView {
            proposal: proposal.id,
            kind: proposal.proposed.kind(),
            merchant: show_merchant.then(|| npub_of(&proposal.merchant)),
            id: proposal.proposed.listing_id().map(str::to_owned),
            status: proposal.status,
            created_at: proposal.created_at,
            decided_at: proposal.decided_at,
            event_id: proposal.event_id.clone(),
            categories: match &proposal.proposed {
                Proposed::Product(product) => product.categories.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// Tells the agent about a decision (NIP-17 from the bot key, through the outbox). A
    /// failure to queue it is logged: the decision stands.
    async fn tell(&self, agent: &PublicKey, merchant: &PublicKey, proposal: &Proposal) {
        let body = AgentNoticeBody::Proposal(ProposalDecided {
            proposal: proposal.id,
            kind: proposal.proposed.kind(),
            merchant: merchant.to_bech32().unwrap_or_else(|_| merchant.to_hex()),
            id: proposal.proposed.listing_id().map(str::to_owned),
            status: proposal.status,
            event_id: proposal.event_id.clone(),
        });
        self.notify(agent, body).await;
    }

    /// DMs the agent a notice. Best effort: the decision it reports is recorded already,
    /// and `agent_merchants` shows it to an agent that missed the notice.
    async fn notify(&self, agent: &PublicKey, body: AgentNoticeBody) {
        let Ok(content) = serde_json::to_string(&AgentNotice { v: 1, body }) else {
            return;
        };
        let publisher = &self.inner.publisher;
        let bot = publisher.keyring().bot().public_key();
        if let Err(e) = publisher
            .send_dm(&bot, *agent, Scheme::Nip17, &content)
            .await
        {
            tracing::warn!(error = %e, "could not send an agent its notice");
        }
    }
}

fn status_name(status: MerchantStatus) -> &'static str {
    match status {
        MerchantStatus::Active => "active",
        MerchantStatus::Pending => "pending",
    }
}

fn npub_of(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

/// `npub1abcd…wxyz`: enough to tell agents apart on a small screen.
pub fn short_npub(key: &PublicKey) -> String {
    let npub = key.to_bech32().unwrap_or_else(|_| key.to_hex());
    let head: String = npub.chars().take(9).collect();
    let tail: String = npub
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}…{tail}")
}

/// The answer to an onboarding that ended with the agent linked to `shop`.
fn linked(shop: Merchant, linked_at: u64) -> Onboarded {
    Onboarded {
        link: LinkState::Linked,
        merchant: Some(LinkedMerchant {
            npub: shop.npub,
            pubkey: shop.pubkey,
            name: shop.name,
            status: status_name(shop.status).to_owned(),
            linked_at,
        }),
        proposal: None,
        activation_code: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use nostr_sdk::{Client, Keys};

    use super::*;
    use crate::agents::users::UserRecord;
    use crate::outbound::{Keyring, Outbox};
    use crate::proto::nip15::{ShippingZone, Stall};
    use crate::store::Store;
    use crate::vault::Vault;

    pub(crate) struct Fixture {
        _dir: tempfile::TempDir,
        pub(crate) desk: Desk,
        pub(crate) merchants: Merchants,
        outbox: Outbox,
        pub(crate) agent: PublicKey,
        pub(crate) merchant: PublicKey,
    }

    /// A desk whose outbox has no relay: every event published stays queued, so the
    /// queue counts what was published.
    pub(crate) fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let vault = Vault::from_root([7; 32])?;
        let merchants = Merchants::open(&store, vault)?;
        let keyring = Keyring::new(Keys::generate(), Default::default());
        let outbox = Outbox::open(&store, Client::default())?;
        let publisher = Publisher::new(keyring.clone(), outbox.clone());
        let users = Users::open(&store, std::sync::Arc::new(HashSet::new()))?;
        let agent = Keys::generate().public_key();
        users.tree().insert(
            &agent.to_bytes(),
            &UserRecord {
                role: Role::Agent,
                registered_at: 1,
                name: Some("Juma".into()),
            },
        )?;
        let (_, keys) = merchants.add("Mama Duka", None, None)?;
        keyring.add(keys.clone());
        let links = Links::open(&store)?;
        links.link(&agent, &keys.public_key(), 1)?;
        let rates = Rates([("KES".to_owned(), 700)].into_iter().collect());
        let desk = Desk::new(
            users,
            links,
            Proposals::open(&store)?,
            merchants.clone(),
            publisher,
            rates,
            Clock::system(),
        );
        Ok(Fixture {
            _dir: dir,
            desk,
            merchants,
            outbox,
            agent,
            merchant: keys.public_key(),
        })
    }

    pub(crate) fn stall() -> Stall {
        Stall {
            id: "duka".into(),
            name: "Mama Duka".into(),
            description: None,
            currency: "sat".into(),
            shipping: vec![ShippingZone {
                id: "nairobi".into(),
                name: None,
                cost: 100.0,
                regions: Vec::new(),
            }],
        }
    }

    pub(crate) fn mango() -> Product {
        Product {
            id: "mango".into(),
            stall_id: "duka".into(),
            name: "Mango".into(),
            description: None,
            images: Vec::new(),
            currency: "sat".into(),
            price: 500.0,
            quantity: Some(3),
            specs: Vec::new(),
            shipping: Vec::new(),
            categories: Vec::new(),
        }
    }

    fn refusal<T>(result: Result<T, DeskError>) -> Option<DeskRefusal> {
        match result {
            Err(DeskError::Refused(refusal)) => Some(refusal),
            _ => None,
        }
    }

    /// Refused by the registry's rules for the content.
    fn merchant_refusal<T>(result: Result<T, DeskError>) -> Option<MerchantRefusal> {
        match result {
            Err(DeskError::Merchant(MerchantError::Refused(refusal))) => Some(refusal),
            _ => None,
        }
    }

    #[test]
    fn an_onboarding_cut_short_gets_its_link_back_for_its_own_agent_only(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture()?;
        let inner = &f.desk.inner;
        let other = Keys::generate().public_key();
        inner.users.tree().insert(
            &other.to_bytes(),
            &UserRecord {
                role: Role::Agent,
                registered_at: 1,
                name: None,
            },
        )?;
        // The crash: the merchant was created for the agent, the link never written.
        let phone = "+254700000001";
        let (shop, keys) = inner
            .merchants
            .add_for_agent("Duka Mpya", phone, &f.agent)?;
        assert!(!inner.links.is_linked(&f.agent, &keys.public_key())?);

        // Another agent knowing the number only asks; the creator gets its link back.
        let asked = f.desk.onboard(&other, phone, "Duka Mpya")?;
        assert_eq!(asked.activation_code, None, "no code for a mere request");
        assert_eq!((asked.link, asked.merchant), (LinkState::Requested, None));
        let again = f.desk.onboard(&f.agent, phone, "Duka Mpya")?;
        assert_eq!(again.link, LinkState::Linked);
        // The crash also kept the code from the agent: it gets a (new) one.
        let code = again.activation_code.clone().unwrap_or_default();
        assert!(inner
            .merchants
            .check_activation(&keys.public_key(), &code)?);
        assert_eq!(again.merchant.map(|m| m.npub), Some(shop.npub));
        assert!(inner.links.is_linked(&f.agent, &keys.public_key())?);
        assert!(!inner.links.is_linked(&other, &keys.public_key())?);

        // Once the owner has taken the shop over (active), an unlinked creator only asks.
        inner.links.unlink(&f.agent, &keys.public_key())?;
        inner.merchants.activate(&keys.public_key())?;
        let after = f.desk.onboard(&f.agent, phone, "Duka Mpya")?;
        assert_eq!(after.link, LinkState::Requested);
        Ok(())
    }

    #[tokio::test]
    async fn an_approval_publishes_once_and_an_unlink_withdraws(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture()?;
        let (desk, agent, merchant) = (&f.desk, f.agent, f.merchant);
        let proposed = desk.propose(&agent, &merchant, Proposed::Stall(stall()))?;
        assert_eq!(proposed.status, ProposalStatus::Pending);
        assert_eq!(
            desk.pending_for(&merchant)?[0].proposed,
            Proposed::Stall(stall())
        );
        assert_eq!(f.outbox.len(), 0);

        // The stall in both forms (30017, and a 30406 for its zone), the merchant's profile
        // (the fixture's merchant had none: its first publication brings it) and the
        // agent's notice; approving again publishes nothing.
        let id = proposed.proposal;
        assert_eq!(desk.approve(&merchant, id).await?, ProposalKind::Stall);
        assert_eq!(f.outbox.len(), 4);
        assert_eq!(desk.approve(&merchant, id).await?, ProposalKind::Stall);
        assert_eq!(f.outbox.len(), 4);
        assert_eq!(
            refusal(desk.reject(&merchant, id).await),
            Some(DeskRefusal::DecidedOtherwise(ProposalStatus::Approved))
        );
        assert!(desk.pending_for(&merchant)?.is_empty());

        // Another merchant cannot decide it, nor anything that is not its own.
        let stranger = Keys::generate().public_key();
        assert_eq!(
            refusal(desk.approve(&stranger, id).await),
            Some(DeskRefusal::ProposalGone)
        );

        // Unlinked with a pending product: withdrawn, and no longer proposable.
        let pending = desk.propose(&agent, &merchant, Proposed::Product(mango()))?;
        assert!(desk.unlink(&merchant, &agent).await?);
        assert!(desk.pending_for(&merchant)?.is_empty());
        assert_eq!(
            refusal(desk.approve(&merchant, pending.proposal).await),
            Some(DeskRefusal::DecidedOtherwise(ProposalStatus::Withdrawn))
        );
        let stored = desk.proposals().get(pending.proposal)?.ok_or("stored")?;
        assert_eq!(stored.status, ProposalStatus::Withdrawn);
        assert_eq!(
            f.outbox.len(),
            5,
            "nothing published, the agent told of the unlink"
        );
        let refused = desk.propose(&agent, &merchant, Proposed::Product(mango()));
        assert_eq!(refusal(refused), Some(DeskRefusal::NotLinked));
        Ok(())
    }

    #[test]
    fn only_linked_agents_propose_and_content_is_checked() -> Result<(), Box<dyn std::error::Error>>
    {
        let f = fixture()?;
        let (desk, agent, merchant) = (&f.desk, f.agent, f.merchant);
        let nobody = Keys::generate().public_key();
        let refused = desk.propose(&nobody, &merchant, Proposed::Stall(stall()));
        assert_eq!(
            refusal(refused),
            Some(DeskRefusal::NotAnAgent(Role::Anonymous))
        );
        let other = Keys::generate().public_key();
        let refused = desk.propose(&agent, &other, Proposed::Stall(stall()));
        assert_eq!(refusal(refused), Some(DeskRefusal::NotLinked));
        // A product whose stall is not published, a negative price, a foreign zone.
        let refused = desk.propose(&agent, &merchant, Proposed::Product(mango()));
        assert_eq!(
            merchant_refusal(refused),
            Some(MerchantRefusal::StallMissing(mango().stall_id))
        );
        let mut free = stall();
        free.currency = "bitcoin".into();
        let refused = desk.propose(&agent, &merchant, Proposed::Stall(free));
        assert_eq!(
            merchant_refusal(refused),
            Some(MerchantRefusal::UnknownCurrency("bitcoin".into()))
        );
        // A currency soko has no rate for: refused; one in [rates] is fine.
        let mut dollars = stall();
        dollars.currency = "USD".into();
        let refused = desk.propose(&agent, &merchant, Proposed::Stall(dollars));
        let Some(no_rate) = refusal(refused) else {
            return Err("USD refused".into());
        };
        let message = no_rate.to_string();
        assert!(message.contains("sat, KES"), "{message}");
        let refused = desk.propose(
            &agent,
            &merchant,
            Proposed::Delete {
                kind: 1,
                id: "duka".into(),
            },
        );
        assert_eq!(
            merchant_refusal(refused),
            Some(MerchantRefusal::NotAListing(1))
        );
        assert!(
            desk.proposals().of_merchant(&merchant)?.is_empty(),
            "nothing stored"
        );
        let mut shillings = stall();
        shillings.currency = "kes".into();
        desk.propose(&agent, &merchant, Proposed::Stall(shillings))?;
        let refused = desk.withdraw(&agent, 42);
        assert_eq!(refusal(refused), Some(DeskRefusal::UnknownProposal(42)));
        Ok(())
    }

    #[tokio::test]
    async fn an_activation_queues_one_notice_per_linked_agent_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture()?;
        let inner = &f.desk.inner;
        let second = Keys::generate().public_key();
        let (_, keys) = inner
            .merchants
            .add_for_agent("Duka Mpya", "+254700000009", &f.agent)?;
        inner.publisher.keyring().add(keys.clone());
        let shop = keys.public_key();
        inner.links.link(&f.agent, &shop, 2)?;
        inner.links.link(&second, &shop, 3)?;
        // The outbox has no relay: what is queued stays there, counted.
        assert_eq!(f.outbox.len(), 0);
        assert!(f.desk.activate(&shop).await?);
        assert_eq!(inner.merchants.get(&shop)?.status, MerchantStatus::Active);
        assert_eq!(f.outbox.len(), 2, "one notice for each linked agent");
        // Again (a retried hop, a second handset): nothing more.
        assert!(!f.desk.activate(&shop).await?);
        assert_eq!(f.outbox.len(), 2);
        // A merchant that was never pending tells no one.
        assert!(!f.desk.activate(&f.merchant).await?);
        assert_eq!(f.outbox.len(), 2);
        Ok(())
    }
}
