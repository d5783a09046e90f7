//! Menus 7 and 8: paying a bill from the balance (an exchange offer soko makes for the
//! merchant: provider, reference, amount, the total confirmed with the PIN) and following
//! it, confirming the payer's receipt with the PIN.

use super::*;

/// What the merchant says "not paid" to: marking an issue on the exchange reveals a
/// registered key, which a custodial merchant does not hold.
pub const NOT_PAID: &str =
    "Call soko's operator now, before the confirm time ends, or the payer is paid.";

/// A way to pay a bill: a provider, a kind of bill, a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillChoice {
    /// The provider's id.
    pub provider: String,
    /// The kind of bill (`paybill`, `till`, `phone`, …).
    pub kind: String,
    /// ISO 4217.
    pub currency: String,
}

/// A choice as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillOption {
    /// The choice.
    pub choice: BillChoice,
    /// E.g. `M-Pesa paybill KES`.
    pub label: String,
}

/// What paying a bill takes from the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillQuote {
    /// What the payer earns.
    pub escrow: Sats,
    /// The bond, back when the trade ends well.
    pub bond: Sats,
    /// soko's fee.
    pub fee: Sats,
    /// All three: what leaves the balance now.
    pub total: Sats,
    /// The balance now.
    pub balance: Sats,
}

/// A bill in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    /// soko's id of the bill.
    pub id: String,
    /// E.g. `KES 1500 M-Pesa`.
    pub summary: String,
    /// The offer's state name, or `STARTING` / `FAILED` before it is on offer.
    pub state: String,
}

/// A bill in detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillDetail {
    /// The summary.
    pub line: BillLine,
    /// What the payer earns.
    pub escrow: Sats,
    /// The payer's receipt, once submitted.
    pub receipt: Option<String>,
    /// True while a receipt waits for the merchant's word.
    pub confirmable: bool,
}

/// The state as the merchant reads it.
pub fn state_text(state: &str) -> &'static str {
    match state {
        "STARTING" => "starting",
        "FAILED" => "not offered, money back",
        "CREATED" | "INVOICE_PAID" => "waiting for a payer",
        "CLAIMED" => "a payer is joining",
        "TAKER_BOND_PAID" => "the payer is paying",
        "RECEIPT_SUBMITTED" => "PAID? check and confirm",
        "COMPLETED" => "done",
        "EXPIRED" => "no payer came, money back",
        "CANCELED" => "cancelled, money back",
        "MARKED_WITH_ISSUE" | "DISPUTED" => "in review",
        "FORFEIT" | "RESOLVED" => "settled by review",
        _ => "in progress",
    }
}

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let back = input == "00";
    match menu {
        Menu::BillOptions { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Main)? {
                return Ok(next);
            }
            match chosen(input, &view.bill_options()?) {
                Some(option) => show(Menu::BillReference {
                    choice: option.choice.clone(),
                }),
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::BillReference { choice } => {
            if back {
                return show(Menu::BillOptions { page: 0 });
            }
            let reference = input.trim();
            if reference.is_empty()
                || reference.chars().count() > 64
                || reference.chars().any(char::is_control)
            {
                return again(menu, "Type the number to pay, up to 64 characters.");
            }
            show(Menu::BillAmount {
                choice: choice.clone(),
                reference: reference.to_owned(),
            })
        }
        Menu::BillAmount { choice, reference } => {
            if back {
                return show(Menu::BillReference {
                    choice: choice.clone(),
                });
            }
            let Some(amount) = number(input).filter(|n| *n > 0 && *n <= MAX_NUMBER) else {
                return again(menu, "Type the amount in whole units, digits only.");
            };
            let amount = amount.to_string();
            match view.bill_quote(choice, reference, &amount)? {
                Err(why) => again(menu, &capitalise(&why)),
                Ok(quote) if quote.total > quote.balance => again(
                    menu,
                    &format!(
                        "That takes {} sat; your balance is {} sat.",
                        quote.total.0, quote.balance.0
                    ),
                ),
                Ok(_) => show(Menu::BillConfirm {
                    choice: choice.clone(),
                    reference: reference.clone(),
                    amount,
                }),
            }
        }
        Menu::BillConfirm {
            choice,
            reference,
            amount,
        } => {
            if back {
                return show(Menu::Main);
            }
            match pin(input) {
                Some(pin) => Ok(Step::Act(Action::PayBill {
                    choice: choice.clone(),
                    reference: reference.clone(),
                    amount: amount.clone(),
                    pin,
                })),
                None => again(menu, "A PIN is 4 to 6 digits."),
            }
        }
        Menu::Bills { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Main)? {
                return Ok(next);
            }
            match chosen(input, &view.bills()?) {
                Some(line) => show(Menu::Bill {
                    id: line.id.clone(),
                }),
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::Bill { id } => {
            if back {
                return show(Menu::Bills { page: 0 });
            }
            let confirmable = view.bill(id)?.is_some_and(|b| b.confirmable);
            match input {
                "1" if confirmable => show(Menu::BillPaid { id: id.clone() }),
                "2" if confirmable => again(menu, NOT_PAID),
                _ => again(menu, "Invalid choice."),
            }
        }
        Menu::BillPaid { id } => {
            if back {
                return show(Menu::Bill { id: id.clone() });
            }
            match pin(input) {
                Some(pin) => Ok(Step::Act(Action::ConfirmBill {
                    id: id.clone(),
                    pin,
                })),
                None => again(menu, "A PIN is 4 to 6 digits."),
            }
        }
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::BillOptions { .. } => {
            let options = view.bill_options()?;
            out.head
                .push("Pay a bill from your balance, by:".to_owned());
            out.items = options
                .iter()
                .enumerate()
                .map(|(i, o)| format!("{} {}", i + 1, o.label))
                .collect();
            if options.is_empty() {
                out.head.push("No way to pay bills yet.".to_owned());
            }
            out.back = true;
        }
        Menu::BillReference { choice } => {
            out.foot
                .push(format!("Type the {} number:", kind_text(&choice.kind)));
            out.back = true;
        }
        Menu::BillAmount { choice, .. } => {
            out.foot.push(format!("Amount in {}:", choice.currency));
            out.back = true;
        }
        Menu::BillConfirm {
            choice,
            reference,
            amount,
        } => {
            out.head.push(format!(
                "Pay {} {amount} to {} {}?",
                choice.currency,
                kind_text(&choice.kind),
                cut(reference, 24)
            ));
            match view.bill_quote(choice, reference, amount)? {
                Ok(q) => out.head.push(format!(
                    "{} sat from balance: {} to payer, {} bond back after, {} fee",
                    q.total.0, q.escrow.0, q.bond.0, q.fee.0
                )),
                Err(why) => out.head.push(capitalise(&why)),
            }
            out.foot.push("PIN to offer it:".to_owned());
            out.back = true;
        }
        Menu::Bills { .. } => {
            let bills = view.bills()?;
            if bills.is_empty() {
                out.head.push("No bills yet.".to_owned());
            } else {
                out.head.push("Your bills, newest first:".to_owned());
            }
            out.items = bills
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{} {} {}", i + 1, b.summary, state_text(&b.state)))
                .collect();
            out.back = true;
        }
        Menu::Bill { id } => match view.bill(id)? {
            None => out.head.push("That bill is gone.".to_owned()),
            Some(bill) => {
                out.head.push(format!(
                    "{}: {}",
                    bill.line.summary,
                    state_text(&bill.line.state)
                ));
                out.head.push(format!("Payer earns {} sat", bill.escrow.0));
                if let Some(receipt) = &bill.receipt {
                    out.head.push(format!("Receipt: {receipt}"));
                }
                if bill.confirmable {
                    out.foot = lines(&["1 Confirm paid", "2 Not paid"]);
                }
                out.back = true;
            }
        },
        Menu::BillPaid { id } => {
            let escrow = view.bill(id)?.map_or(Sats::ZERO, |b| b.escrow);
            out.head
                .push(format!("Release {} sat to the payer?", escrow.0));
            out.foot.push("PIN to confirm:".to_owned());
            out.back = true;
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}

/// A kind of bill in words.
fn kind_text(kind: &str) -> &str {
    match kind {
        "paybill" => "paybill",
        "till" => "till",
        "bank_transfer" => "account",
        "qr" => "QR bill",
        "phone" => "phone",
        _ => "bill",
    }
}
