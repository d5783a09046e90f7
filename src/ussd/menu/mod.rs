//! The menu engine, pure: where a merchant is ([`Menu`]), what one input does there
//! ([`step`]), what an action's outcome leads to ([`after`]), and what each position shows
//! ([`render`]). Data comes through a read-only [`View`]; changes leave as [`Action`]s that
//! the service applies through the domain APIs. No I/O here, so every screen and transition
//! is unit-testable.
//!
//! This file holds the engine; each family of screens has its own file with what input does
//! there and what it shows: `onboarding` (activation, PIN, shop name, login), `orders`
//! (menus 1 and 2), `products` (3), `approvals` (4), `balance` (5), `settings` (6).
//!
//! ```text
//! first dial ─▶ Activation code ─▶ NewPin ─▶ RepeatPin ─(pending)▶ ConfirmName ─▶ Main
//!           └─▶ Login ─────────────────────────────(pending)───────────────────┘
//! Main: 1 Orders ─▶ Order detail ─▶ 8 report the buyer (code withheld) | answer its issue
//!       2 Confirm delivery: order no. ─▶ buyer's code
//!       3 Products ─▶ product ─▶ price | stock | hide/show
//!       4 Pending approvals ─▶ proposal ─▶ approve | reject
//!       5 Balance ─▶ to my address | another address ─▶ confirm with the PIN
//!       6 Settings ─▶ Lightning address ─▶ confirm with the PIN | change PIN (old, new, again)
//!                  | agents ─▶ agent ─▶ unlink | buyer details to agents on/off
//!       7 Pay a bill ─▶ provider ─▶ number ─▶ amount ─▶ confirm the total with the PIN
//!       8 My bills ─▶ bill ─▶ (receipt in) confirm paid with the PIN | not paid
//! ```

use serde::{Deserialize, Serialize};

use super::screen::{cut, Layout, Screen, BODY_LIMIT};
use crate::escrow::code::normalize;
use crate::escrow::{EscrowState, IssueChoice, Shipping};
use crate::money::Sats;

mod approvals;
mod balance;
mod bills;
mod onboarding;
mod orders;
mod products;
mod settings;

pub use self::bills::{BillChoice, BillDetail, BillLine, BillOption, BillQuote};

/// Digits of an activation code.
const ACTIVATION_DIGITS: usize = crate::market::activation::CODE_DIGITS;
/// Largest price or stock accepted from a keypad.
const MAX_NUMBER: u64 = 1_000_000_000_000;

/// A secret typed by the merchant (PIN, delivery code): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the merchant is in the menu tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Menu {
    /// First use: the one-time activation code handed to whoever registered the shop.
    Activation,
    /// First use, after the right activation code: choose a PIN.
    NewPin {
        /// The activation code, used up when the PIN is set.
        code: Secret,
    },
    /// First use: the same PIN again.
    RepeatPin {
        /// The activation code.
        code: Secret,
        /// The first entry.
        first: Secret,
    },
    /// A pending merchant confirms its shop name, which activates it.
    ConfirmName,
    /// Enter the PIN.
    Login,
    /// The main menu.
    Main,
    /// 1: paid orders, newest first.
    Orders {
        /// Page shown.
        page: usize,
    },
    /// 1 → one order.
    Order {
        /// Order number.
        number: u64,
        /// Page shown.
        page: usize,
    },
    /// 1 → an order past its delivery window → report that the buyer withholds the code.
    IssueMark {
        /// Order number.
        number: u64,
    },
    /// 1 → an order the buyer marked an issue on → concede or dispute.
    IssueAnswer {
        /// Order number.
        number: u64,
    },
    /// 2: which order was delivered.
    DeliverOrder,
    /// 2 → the buyer's code for it.
    DeliverCode {
        /// Order number.
        number: u64,
    },
    /// 3: products.
    Products {
        /// Page shown.
        page: usize,
    },
    /// 3 → one product.
    Product {
        /// Product id.
        id: String,
    },
    /// 3 → a product's new price.
    ProductPrice {
        /// Product id.
        id: String,
    },
    /// 3 → a product's new stock.
    ProductStock {
        /// Product id.
        id: String,
    },
    /// 4: stalls and products proposed for approval.
    Approvals {
        /// Page shown.
        page: usize,
    },
    /// 4 → one proposal: approve or reject.
    Approval {
        /// Proposal id.
        id: u64,
        /// Page shown.
        page: usize,
    },
    /// 5: balance and withdraw.
    Balance,
    /// 5 → type a Lightning address to withdraw to.
    WithdrawTo,
    /// 5 → confirm the withdrawal with the PIN.
    WithdrawConfirm {
        /// Lightning address or LNURL.
        destination: String,
    },
    /// 6 → confirm a new Lightning address with the PIN.
    AddressConfirm {
        /// The address typed.
        address: String,
    },
    /// 6: settings.
    Settings,
    /// 6 → a new Lightning address.
    LightningAddress,
    /// 6 → change PIN: the current one.
    OldPin,
    /// 6 → change PIN: the new one.
    NewPinChange {
        /// The current PIN, checked when the change is applied.
        old: Secret,
    },
    /// 6 → change PIN: the new one again.
    RepeatPinChange {
        /// The current PIN.
        old: Secret,
        /// The new PIN.
        new: Secret,
    },
    /// 6 → the agents linked to the shop.
    Agents {
        /// Page shown.
        page: usize,
    },
    /// 6 → agents → confirm unlinking one.
    AgentUnlink {
        /// The agent (hex).
        agent: String,
    },
    /// 7: how the bill is paid (provider, kind, currency).
    BillOptions {
        /// Page shown.
        page: usize,
    },
    /// 7 → the number to pay.
    BillReference {
        /// How.
        choice: BillChoice,
    },
    /// 7 → the amount.
    BillAmount {
        /// How.
        choice: BillChoice,
        /// The number to pay.
        reference: String,
    },
    /// 7 → the total from the balance, confirmed with the PIN.
    BillConfirm {
        /// How.
        choice: BillChoice,
        /// The number to pay.
        reference: String,
        /// Whole units of the currency.
        amount: String,
    },
    /// 8: the merchant's bills.
    Bills {
        /// Page shown.
        page: usize,
    },
    /// 8 → one bill.
    Bill {
        /// soko's id of the bill.
        id: String,
    },
    /// 8 → confirm the receipt with the PIN.
    BillPaid {
        /// soko's id of the bill.
        id: String,
    },
}

/// A change the merchant asked for; the service applies it through the domain APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check the PIN (counts wrong tries, may lock).
    CheckPin(Secret),
    /// Check the activation code without using it up (counts as a PIN try).
    CheckActivation(Secret),
    /// Use up the activation code and set the first PIN.
    SetPin {
        /// The activation code.
        code: Secret,
        /// The PIN.
        pin: Secret,
    },
    /// Activate the pending merchant and publish its profile.
    Activate,
    /// Present the buyer's code: releases the escrow, then pays out like `order_deliver`.
    Deliver {
        /// Order number.
        number: u64,
        /// The code typed.
        code: Secret,
    },
    /// Mark an issue on an order (soko signs the merchant's reveal with the shop key).
    MarkIssue {
        /// Order number.
        number: u64,
    },
    /// Answer the buyer's issue: concede (the buyer is refunded) or dispute.
    AnswerIssue {
        /// Order number.
        number: u64,
        /// True to concede.
        concede: bool,
    },
    /// New price (whole units of the stall's currency), republished.
    SetPrice {
        /// Product id.
        id: String,
        /// Price.
        price: u64,
    },
    /// New stock, republished.
    SetStock {
        /// Product id.
        id: String,
        /// Units.
        quantity: u64,
    },
    /// Take a product off sale (NIP-09 deletion; kept in soko).
    Hide {
        /// Product id.
        id: String,
    },
    /// Put a hidden product back on sale (republished).
    Show {
        /// Product id.
        id: String,
    },
    /// Pay the whole balance out to a Lightning address or LNURL, once the PIN is checked.
    Withdraw {
        /// Where to.
        destination: String,
        /// The PIN typed to confirm.
        pin: Secret,
    },
    /// Save the payout Lightning address, once the PIN is checked.
    SetLightningAddress {
        /// The address.
        address: String,
        /// The PIN typed to confirm.
        pin: Secret,
    },
    /// Change the PIN (checks the old one like a login).
    ChangePin {
        /// Current PIN.
        old: Secret,
        /// New PIN.
        new: Secret,
    },
    /// Approve an agent's proposal (published through the listing domain API).
    Approve {
        /// Proposal id.
        id: u64,
    },
    /// Reject an agent's proposal.
    Reject {
        /// Proposal id.
        id: u64,
    },
    /// Unlink an agent (its pending proposals are withdrawn).
    Unlink {
        /// The agent (hex).
        agent: String,
    },
    /// Whether linked agents get buyers' details with paid-order notices.
    ShareBuyer(bool),
    /// Offer a bill for payment, funded from the balance, once the PIN is checked.
    PayBill {
        /// How.
        choice: BillChoice,
        /// The number to pay.
        reference: String,
        /// Whole units of the currency.
        amount: String,
        /// The PIN typed to confirm.
        pin: Secret,
    },
    /// Confirm a bill's receipt (the payer is paid), once the PIN is checked.
    ConfirmBill {
        /// soko's id of the bill.
        id: String,
        /// The PIN typed to confirm.
        pin: Secret,
    },
}

/// What applying an [`Action`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// The PIN was wrong; this many tries remain.
    WrongPin {
        /// Tries left before the lock.
        tries_left: u32,
    },
    /// Too many wrong PINs: locked until this unix time.
    Locked {
        /// Unix seconds.
        until: u64,
    },
    /// Not done, for this reason (safe to show).
    Refused(String),
    /// Delivered: the escrow released to the merchant.
    Delivered {
        /// Released.
        released: Sats,
        /// What happened to the automatic payout, if the merchant has an address.
        payout: Option<String>,
        /// Balance now.
        balance: Sats,
    },
    /// Withdrawn.
    Withdrawn {
        /// Received by the merchant.
        amount: Sats,
        /// Lightning fee.
        fee: Sats,
        /// Balance left.
        balance: Sats,
    },
    /// A bill is on offer.
    BillOffered {
        /// soko's id of the bill.
        id: String,
    },
    /// Taken from the balance and sent, but the mint has not confirmed it yet: soko
    /// settles it later (paid, or given back to the balance).
    WithdrawalPending {
        /// On its way.
        amount: Sats,
        /// Balance left.
        balance: Sats,
    },
}

/// What one input leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Show `menu`, with a notice line on top.
    Show {
        /// The new position.
        menu: Menu,
        /// A line such as "Wrong PIN. 2 tries left."
        notice: Option<String>,
    },
    /// End the session with this text.
    End(String),
    /// Apply `action`, then ask [`after`].
    Act(Action),
}

/// The shop as a screen needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shop {
    /// Shop name.
    pub name: String,
    /// Still pending (onboarding).
    pub pending: bool,
    /// Saved payout address.
    pub lightning_address: Option<String>,
    /// Balance held by soko for the merchant.
    pub balance: Sats,
    /// Linked agents get buyers' details with paid-order notices.
    pub share_buyer: bool,
}

/// A pending proposal in menu 4's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalLine {
    /// Proposal id.
    pub id: u64,
    /// One line, e.g. `Product Mango 500 sat, Juma`.
    pub summary: String,
}

/// A linked agent in the settings' list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLine {
    /// The agent (hex).
    pub agent: String,
    /// Its registration name, or a short npub.
    pub label: String,
}

/// An order in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// Order number.
    pub number: u64,
    /// Escrow state.
    pub state: EscrowState,
    /// Total paid.
    pub total: Sats,
}

/// An order in detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDetail {
    /// The summary.
    pub line: OrderLine,
    /// (product name, units).
    pub items: Vec<(String, u64)>,
    /// The buyer's shipping details, when stored.
    pub shipping: Option<Shipping>,
    /// What the merchant may do about an issue on it now.
    pub issue: IssueChoice,
}

/// A product as the merchant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductLine {
    /// Product id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Price with its currency, for display (e.g. `500 sat`).
    pub price: String,
    /// Currency code of the stall.
    pub currency: String,
    /// Units in stock; `None` is unlimited.
    pub quantity: Option<u64>,
    /// Off sale.
    pub hidden: bool,
}

/// Read-only access to the merchant's data.
pub trait View {
    /// Why reading failed.
    type Error;
    /// The shop.
    fn shop(&self) -> Result<Shop, Self::Error>;
    /// Paid orders, newest first.
    fn orders(&self) -> Result<Vec<OrderLine>, Self::Error>;
    /// One order (any state).
    fn order(&self, number: u64) -> Result<Option<OrderDetail>, Self::Error>;
    /// Products: listed ones, then hidden ones.
    fn products(&self) -> Result<Vec<ProductLine>, Self::Error>;
    /// Pending approvals, oldest first.
    fn approvals(&self) -> Result<Vec<ApprovalLine>, Self::Error>;
    /// A pending approval's detail lines; `None` once it is decided or gone.
    fn approval(&self, id: u64) -> Result<Option<Vec<String>>, Self::Error>;
    /// The agents linked to the shop.
    fn agents(&self) -> Result<Vec<AgentLine>, Self::Error>;
    /// The ways a bill can be paid.
    fn bill_options(&self) -> Result<Vec<BillOption>, Self::Error>;
    /// What paying `amount` to `reference` would take, or why it cannot be offered.
    fn bill_quote(
        &self,
        choice: &BillChoice,
        reference: &str,
        amount: &str,
    ) -> Result<Result<BillQuote, String>, Self::Error>;
    /// The merchant's bills, newest first.
    fn bills(&self) -> Result<Vec<BillLine>, Self::Error>;
    /// One bill.
    fn bill(&self, id: &str) -> Result<Option<BillDetail>, Self::Error>;
    /// Unix seconds now.
    fn now(&self) -> u64;
}

/// Orders menu 1 lists: those that were paid.
pub fn listed(state: EscrowState) -> bool {
    !matches!(state, EscrowState::AwaitingPayment | EscrowState::Expired)
}

/// The screen for the very first hop, before any input.
pub fn first(has_pin: bool) -> Menu {
    if has_pin {
        Menu::Login
    } else {
        Menu::Activation
    }
}

/// The screen family that answers and draws a menu (the main menu is the engine's own): the
/// routing `step` and `layout` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Main,
    Onboarding,
    Orders,
    Products,
    Approvals,
    Balance,
    Settings,
    Bills,
}

fn family(menu: &Menu) -> Family {
    match menu {
        Menu::Main => Family::Main,
        Menu::Activation
        | Menu::NewPin { .. }
        | Menu::RepeatPin { .. }
        | Menu::ConfirmName
        | Menu::Login => Family::Onboarding,
        Menu::Orders { .. }
        | Menu::Order { .. }
        | Menu::DeliverOrder
        | Menu::IssueMark { .. }
        | Menu::IssueAnswer { .. }
        | Menu::DeliverCode { .. } => Family::Orders,
        Menu::Products { .. }
        | Menu::Product { .. }
        | Menu::ProductPrice { .. }
        | Menu::ProductStock { .. } => Family::Products,
        Menu::Approvals { .. } | Menu::Approval { .. } => Family::Approvals,
        Menu::Balance | Menu::WithdrawTo | Menu::WithdrawConfirm { .. } => Family::Balance,
        Menu::AddressConfirm { .. }
        | Menu::Settings
        | Menu::Agents { .. }
        | Menu::AgentUnlink { .. }
        | Menu::LightningAddress
        | Menu::OldPin
        | Menu::NewPinChange { .. }
        | Menu::RepeatPinChange { .. } => Family::Settings,
        Menu::BillOptions { .. }
        | Menu::BillReference { .. }
        | Menu::BillAmount { .. }
        | Menu::BillConfirm { .. }
        | Menu::Bills { .. }
        | Menu::Bill { .. }
        | Menu::BillPaid { .. } => Family::Bills,
    }
}

/// What `input` does at `menu`.
pub fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let input = input.trim();
    match family(menu) {
        Family::Main => match input {
            "1" => show(Menu::Orders { page: 0 }),
            "2" => show(Menu::DeliverOrder),
            "3" => show(Menu::Products { page: 0 }),
            "4" => show(Menu::Approvals { page: 0 }),
            "5" => show(Menu::Balance),
            "6" => show(Menu::Settings),
            "7" => show(Menu::BillOptions { page: 0 }),
            "8" => show(Menu::Bills { page: 0 }),
            _ => again(menu, "Invalid choice."),
        },
        Family::Onboarding => onboarding::step(menu, input),
        Family::Orders => orders::step(menu, input, view),
        Family::Products => products::step(menu, input, view),
        Family::Approvals => approvals::step(menu, input, view),
        Family::Balance => balance::step(menu, input, view),
        Family::Settings => settings::step(menu, input, view),
        Family::Bills => bills::step(menu, input, view),
    }
}

/// Where an action's outcome leads, from the menu where it was asked for.
pub fn after<V: View>(
    from: &Menu,
    action: &Action,
    outcome: Outcome,
    view: &V,
) -> Result<Step, V::Error> {
    let show = |menu: Menu, notice: &str| {
        Ok(Step::Show {
            menu,
            notice: (!notice.is_empty()).then(|| notice.to_owned()),
        })
    };
    match outcome {
        Outcome::Locked { until } => Ok(Step::End(locked(until, view.now()))),
        Outcome::WrongPin { tries_left } => {
            let what = match action {
                Action::CheckActivation(_) => "code",
                _ => "PIN",
            };
            let notice = format!(
                "Wrong {what}. {tries_left} {} left.",
                if tries_left == 1 { "try" } else { "tries" }
            );
            let menu = match action {
                Action::ChangePin { .. } => Menu::OldPin,
                Action::CheckActivation(_) => Menu::Activation,
                Action::Withdraw { destination, .. } => Menu::WithdrawConfirm {
                    destination: destination.clone(),
                },
                Action::SetLightningAddress { address, .. } => Menu::AddressConfirm {
                    address: address.clone(),
                },
                Action::PayBill {
                    choice,
                    reference,
                    amount,
                    ..
                } => Menu::BillConfirm {
                    choice: choice.clone(),
                    reference: reference.clone(),
                    amount: amount.clone(),
                },
                Action::ConfirmBill { id, .. } => Menu::BillPaid { id: id.clone() },
                _ => Menu::Login,
            };
            show(menu, &notice)
        }
        Outcome::Refused(why) => {
            let menu = match action {
                Action::Deliver { number, .. } => match view.order(*number)? {
                    Some(order) if order.line.state == EscrowState::Paid => from.clone(),
                    _ => Menu::DeliverOrder,
                },
                Action::SetPrice { id, .. }
                | Action::SetStock { id, .. }
                | Action::Hide { id }
                | Action::Show { id } => Menu::Product { id: id.clone() },
                Action::SetLightningAddress { .. } => Menu::LightningAddress,
                Action::Withdraw { .. } => Menu::Balance,
                Action::Activate
                | Action::SetPin { .. }
                | Action::CheckPin(_)
                | Action::CheckActivation(_) => return Ok(Step::End(why)),
                Action::ChangePin { .. } | Action::ShareBuyer(_) => Menu::Settings,
                Action::Approve { id } | Action::Reject { id } => {
                    if view.approval(*id)?.is_some() {
                        Menu::Approval { id: *id, page: 0 }
                    } else {
                        Menu::Approvals { page: 0 }
                    }
                }
                Action::Unlink { .. } => Menu::Agents { page: 0 },
                Action::PayBill { .. } => Menu::Main,
                Action::ConfirmBill { id, .. } => Menu::Bill { id: id.clone() },
                Action::MarkIssue { number } | Action::AnswerIssue { number, .. } => {
                    Menu::Order {
                        number: *number,
                        page: 0,
                    }
                }
            };
            show(menu, &capitalise(&why))
        }
        Outcome::Delivered {
            released,
            payout,
            balance,
        } => {
            let number = match action {
                Action::Deliver { number, .. } => *number,
                _ => 0,
            };
            let mut text = format!(
                "Order #{number} delivered: {} sat released to you.",
                released.0
            );
            if let Some(payout) = payout {
                text.push(' ');
                text.push_str(&payout);
            }
            text.push_str(&format!(" Balance: {} sat.", balance.0));
            Ok(Step::End(text))
        }
        Outcome::Withdrawn {
            amount,
            fee,
            balance,
        } => Ok(Step::End(format!(
            "Sent {} sat (fee {} sat). Balance: {} sat.",
            amount.0, fee.0, balance.0
        ))),
        Outcome::BillOffered { id } => show(Menu::Bill { id }, "Your bill is on offer."),
        Outcome::WithdrawalPending { amount, balance } => Ok(Step::End(format!(
            "{} sat is on its way; the mint has not confirmed it yet. If it fails, it comes back to your balance. Balance: {} sat.",
            amount.0, balance.0
        ))),
        Outcome::Done => match action {
            Action::CheckActivation(code) => show(Menu::NewPin { code: code.clone() }, ""),
            Action::CheckPin(_) | Action::SetPin { .. } => {
                if view.shop()?.pending {
                    show(Menu::ConfirmName, "")
                } else if matches!(action, Action::SetPin { .. }) {
                    show(Menu::Main, "PIN saved.")
                } else {
                    show(Menu::Main, "")
                }
            }
            Action::Activate => show(Menu::Main, "Your shop is open!"),
            Action::SetPrice { id, .. } | Action::SetStock { id, .. } => {
                show(Menu::Product { id: id.clone() }, "Saved and published.")
            }
            Action::Hide { id } => show(Menu::Product { id: id.clone() }, "Hidden from buyers."),
            Action::Show { id } => show(Menu::Product { id: id.clone() }, "Back on sale."),
            Action::SetLightningAddress { .. } => show(Menu::Settings, "Lightning address saved."),
            Action::ChangePin { .. } => show(Menu::Settings, "PIN changed."),
            Action::Approve { .. } => show(Menu::Approvals { page: 0 }, "Approved."),
            Action::Reject { .. } => show(Menu::Approvals { page: 0 }, "Rejected."),
            Action::Unlink { .. } => show(Menu::Agents { page: 0 }, "Agent unlinked."),
            Action::ShareBuyer(true) => show(
                Menu::Settings,
                "Your agents now get buyers' details with paid orders.",
            ),
            Action::ShareBuyer(false) => {
                show(Menu::Settings, "Your agents no longer get buyers' details.")
            }
            Action::ConfirmBill { id, .. } => show(
                Menu::Bill { id: id.clone() },
                "Confirmed: the payer is paid.",
            ),
            Action::Deliver { .. } | Action::Withdraw { .. } | Action::PayBill { .. } => {
                show(Menu::Main, "")
            }
            Action::MarkIssue { number } => Ok(Step::End(format!(
                "Issue on order #{number} reported. The buyer may answer; then soko's operator decides."
            ))),
            Action::AnswerIssue {
                number,
                concede: true,
            } => Ok(Step::End(format!(
                "Order #{number}: you agreed; the buyer gets the money back."
            ))),
            Action::AnswerIssue { number, .. } => Ok(Step::End(format!(
                "Order #{number} disputed: soko's operator decides."
            ))),
        },
    }
}

/// What `menu` shows, with an optional notice line on top.
pub fn render<V: View>(menu: &Menu, notice: Option<&str>, view: &V) -> Result<Screen, V::Error> {
    let page = match menu {
        Menu::Orders { page } | Menu::Order { page, .. } | Menu::Products { page } => *page,
        Menu::Approvals { page } | Menu::Approval { page, .. } | Menu::Agents { page } => *page,
        Menu::BillOptions { page } | Menu::Bills { page } => *page,
        _ => 0,
    };
    let text = layout(menu, notice, view)?.render(page).text;
    Ok(Screen { text, end: false })
}

/// The layout of `menu` (all its pages).
pub fn layout<V: View>(menu: &Menu, notice: Option<&str>, view: &V) -> Result<Layout, V::Error> {
    let mut out = Layout::default();
    out.head.extend(notice.map(str::to_owned));
    match family(menu) {
        Family::Main => {
            out.head.push(view.shop()?.name);
            out.foot = lines(&[
                "1 Orders",
                "2 Confirm delivery",
                "3 Products",
                "4 Pending approvals",
                "5 Balance & withdraw",
                "6 Settings",
                "7 Pay a bill",
                "8 My bills",
            ]);
        }
        Family::Onboarding => onboarding::layout(menu, &mut out, view)?,
        Family::Orders => orders::layout(menu, &mut out, view)?,
        Family::Products => products::layout(menu, &mut out, view)?,
        Family::Approvals => approvals::layout(menu, &mut out, view)?,
        Family::Balance => balance::layout(menu, &mut out, view)?,
        Family::Settings => settings::layout(menu, &mut out, view)?,
        Family::Bills => bills::layout(menu, &mut out, view)?,
    }
    Ok(out)
}

/// The lockout screen: until when, in UTC, and how long that is.
pub fn locked(until: u64, now: u64) -> String {
    if until == super::pin::UNTIL_RESET {
        return "Too many wrong PINs. Your shop's USSD access is locked until soko's operator unlocks it. Please call them.".to_owned();
    }
    let minutes = until.saturating_sub(now).div_ceil(60);
    let day = until % 86_400;
    format!(
        "Too many wrong PINs. Your shop's USSD access is locked until {:02}:{:02} UTC (in {minutes} min). Please dial again then.",
        day / 3600,
        day % 3600 / 60
    )
}

/// `0` / `00` on a paginated menu: the next page, the previous page, or `up`.
fn paging<V: View>(
    menu: &Menu,
    page: usize,
    input: &str,
    view: &V,
    up: Menu,
) -> Result<Option<Step>, V::Error> {
    let with_page = |page: usize| match menu {
        Menu::Orders { .. } => Menu::Orders { page },
        Menu::Order { number, .. } => Menu::Order {
            number: *number,
            page,
        },
        Menu::Products { .. } => Menu::Products { page },
        Menu::Approval { id, .. } => Menu::Approval { id: *id, page },
        Menu::Agents { .. } => Menu::Agents { page },
        Menu::BillOptions { .. } => Menu::BillOptions { page },
        Menu::Bills { .. } => Menu::Bills { page },
        _ => Menu::Approvals { page },
    };
    let show = |menu: Menu, notice: Option<&str>| {
        Some(Step::Show {
            menu,
            notice: notice.map(str::to_owned),
        })
    };
    Ok(match input {
        "0" => {
            if page + 1 < layout(menu, None, view)?.page_count() {
                show(with_page(page + 1), None)
            } else {
                show(menu.clone(), Some("No more."))
            }
        }
        "00" if page == 0 => show(up, None),
        "00" => show(with_page(page - 1), None),
        _ => None,
    })
}

/// Shows `menu`.
fn show<E>(menu: Menu) -> Result<Step, E> {
    Ok(Step::Show { menu, notice: None })
}

/// Stays on `menu`, with a notice.
fn again<E>(menu: &Menu, notice: &str) -> Result<Step, E> {
    Ok(Step::Show {
        menu: menu.clone(),
        notice: Some(notice.to_owned()),
    })
}

/// Screen lines from text.
fn lines(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The entry a 1-based number picks from a list.
fn chosen<'a, T>(input: &str, list: &'a [T]) -> Option<&'a T> {
    number(input)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| list.get(i))
}

fn gone() -> Step {
    Step::Show {
        menu: Menu::Products { page: 0 },
        notice: Some("That product is gone.".to_owned()),
    }
}

fn product<V: View>(view: &V, id: &str) -> Result<Option<ProductLine>, V::Error> {
    Ok(view.products()?.into_iter().find(|p| p.id == id))
}

/// A PIN: 4 to 6 digits.
fn pin(input: &str) -> Option<Secret> {
    let valid = (4..=6).contains(&input.len()) && input.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| Secret(input.to_owned()))
}

fn number(input: &str) -> Option<u64> {
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    input.parse().ok()
}

fn address(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("Type an address like name@domain.".to_owned());
    }
    crate::lnurl::lnurlp_url(input)
        .map(|_| input.to_owned())
        .map_err(|_| "That is not a Lightning address (name@domain).".to_owned())
}

fn status(state: EscrowState) -> &'static str {
    match state {
        EscrowState::AwaitingPayment => "UNPAID",
        EscrowState::Paid => "PAID",
        EscrowState::Delivered | EscrowState::PaidOut => "DONE",
        EscrowState::Expired => "EXPIRED",
        EscrowState::Refunding | EscrowState::Refunded => "REFUNDED",
        EscrowState::Disputed => "IN REVIEW",
        EscrowState::IssueMarked => "ISSUE",
    }
}

fn stock(quantity: Option<u64>) -> String {
    quantity.map_or_else(String::new, |q| format!(" x{q}"))
}

fn stock_count(quantity: Option<u64>) -> String {
    quantity.map_or_else(|| "unlimited".to_owned(), |q| q.to_string())
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// True when a screen fits the handset with its prefix.
pub fn fits(screen: &Screen) -> bool {
    screen.text.chars().count() <= BODY_LIMIT
}

#[cfg(test)]
mod tests;
