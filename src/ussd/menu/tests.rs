//! The menu engine's transitions and screens, table by table, and a property test that no
//! screen it renders outgrows the handset.

use std::convert::Infallible;

use proptest::prelude::*;

use super::*;
use crate::escrow::{EscrowState, Shipping};
use crate::money::Sats;
use crate::proto::ussd::SCREEN_LIMIT;

#[derive(Debug, Clone)]
struct Fake {
    shop: Shop,
    orders: Vec<OrderDetail>,
    products: Vec<ProductLine>,
    /// (id, summary, detail lines).
    approvals: Vec<(u64, String, Vec<String>)>,
    agents: Vec<AgentLine>,
    bill_options: Vec<BillOption>,
    bills: Vec<BillDetail>,
}

impl View for Fake {
    type Error = Infallible;
    fn shop(&self) -> Result<Shop, Infallible> {
        Ok(self.shop.clone())
    }
    fn orders(&self) -> Result<Vec<OrderLine>, Infallible> {
        let mut lines: Vec<OrderLine> = self
            .orders
            .iter()
            .map(|o| o.line.clone())
            .filter(|l| listed(l.state))
            .collect();
        lines.sort_by_key(|l| std::cmp::Reverse(l.number));
        Ok(lines)
    }
    fn order(&self, number: u64) -> Result<Option<OrderDetail>, Infallible> {
        Ok(self
            .orders
            .iter()
            .find(|o| o.line.number == number)
            .cloned())
    }
    fn products(&self) -> Result<Vec<ProductLine>, Infallible> {
        Ok(self.products.clone())
    }
    fn approvals(&self) -> Result<Vec<ApprovalLine>, Infallible> {
        Ok(self
            .approvals
            .iter()
            .map(|(id, summary, _)| ApprovalLine {
                id: *id,
                summary: summary.clone(),
            })
            .collect())
    }
    fn approval(&self, id: u64) -> Result<Option<Vec<String>>, Infallible> {
        Ok(self
            .approvals
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, _, lines)| lines.clone()))
    }
    fn agents(&self) -> Result<Vec<AgentLine>, Infallible> {
        Ok(self.agents.clone())
    }
    fn now(&self) -> u64 {
        1_763_900_000
    }
    fn bill_options(&self) -> Result<Vec<BillOption>, Infallible> {
        Ok(self.bill_options.clone())
    }
    fn bill_quote(
        &self,
        _choice: &BillChoice,
        reference: &str,
        _amount: &str,
    ) -> Result<Result<BillQuote, String>, Infallible> {
        if reference == "0" {
            return Ok(Err("provider: that is not a paybill number".to_owned()));
        }
        Ok(Ok(BillQuote {
            escrow: Sats(100_000),
            bond: Sats(6_000),
            fee: Sats(1_100),
            total: Sats(107_100),
            balance: self.shop.balance,
        }))
    }
    fn bills(&self) -> Result<Vec<BillLine>, Infallible> {
        Ok(self.bills.iter().map(|b| b.line.clone()).collect())
    }
    fn bill(&self, id: &str) -> Result<Option<BillDetail>, Infallible> {
        Ok(self.bills.iter().find(|b| b.line.id == id).cloned())
    }
}

fn mpesa() -> BillChoice {
    BillChoice {
        provider: "mpesa".into(),
        kind: "paybill".into(),
        currency: "KES".into(),
    }
}

fn bill(id: &str, summary: &str, state: &str, receipt: Option<&str>) -> BillDetail {
    BillDetail {
        line: BillLine {
            id: id.into(),
            summary: summary.into(),
            state: state.into(),
        },
        escrow: Sats(100_000),
        receipt: receipt.map(str::to_owned),
        confirmable: state == "RECEIPT_SUBMITTED",
    }
}

fn order(number: u64, state: EscrowState) -> OrderDetail {
    OrderDetail {
        line: OrderLine {
            number,
            state,
            total: Sats(1120),
        },
        items: vec![("Mango".into(), 2)],
        shipping: Some(Shipping {
            name: Some("Amina".into()),
            address: Some("Moi Avenue 12".into()),
            phone: Some("+254722000333".into()),
            message: Some("Leave it at the gate".into()),
            zone: "nairobi".into(),
            ..Shipping::default()
        }),
        issue: IssueChoice::None,
    }
}

fn mango(hidden: bool) -> ProductLine {
    ProductLine {
        id: "mango".into(),
        name: "Mango".into(),
        price: "500 sat".into(),
        currency: "sat".into(),
        quantity: Some(3),
        hidden,
    }
}

fn shop() -> Fake {
    Fake {
        shop: Shop {
            name: "Mama Duka".into(),
            pending: false,
            lightning_address: None,
            balance: Sats::ZERO,
            share_buyer: false,
        },
        orders: vec![
            order(1, EscrowState::PaidOut),
            order(2, EscrowState::Paid),
            order(3, EscrowState::AwaitingPayment),
        ],
        products: vec![mango(false)],
        approvals: Vec::new(),
        agents: Vec::new(),
        bill_options: vec![BillOption {
            choice: mpesa(),
            label: "M-Pesa paybill KES".into(),
        }],
        bills: vec![
            bill(
                "b2",
                "KES 1500 M-Pesa",
                "RECEIPT_SUBMITTED",
                Some("Confirmed. KES 1,500.00 paid to 888880"),
            ),
            bill("b1", "KES 200 M-Pesa", "COMPLETED", None),
        ],
    }
}

fn ok<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// The step for `input` at `menu`.
fn go(menu: &Menu, input: &str, view: &Fake) -> Step {
    ok(step(menu, input, view))
}

fn shows(menu: Menu) -> Step {
    Step::Show { menu, notice: None }
}

fn notice(menu: Menu, text: &str) -> Step {
    Step::Show {
        menu,
        notice: Some(text.into()),
    }
}

fn text(menu: &Menu, view: &Fake) -> String {
    ok(render(menu, None, view)).text
}

#[test]
fn onboarding_takes_the_code_sets_a_pin_twice_then_confirms_the_name() {
    let mut view = shop();
    view.shop.pending = true;
    assert_eq!(first(false), Menu::Activation);
    assert_eq!(
        text(&Menu::Activation, &view),
        "Welcome to soko, Mama Duka!\nEnter the 12-digit activation code from your agent or soko's operator:"
    );
    assert_eq!(
        go(&Menu::Activation, "4821", &view),
        notice(Menu::Activation, "An activation code has 12 digits.")
    );
    let code = Secret("123456789012".into());
    let check = Action::CheckActivation(code.clone());
    assert_eq!(
        go(&Menu::Activation, "123456789012", &view),
        Step::Act(check.clone())
    );
    assert_eq!(
        ok(after(
            &Menu::Activation,
            &check,
            Outcome::WrongPin { tries_left: 2 },
            &view
        )),
        notice(Menu::Activation, "Wrong code. 2 tries left.")
    );
    let new_pin = Menu::NewPin { code: code.clone() };
    assert_eq!(
        ok(after(&Menu::Activation, &check, Outcome::Done, &view)),
        shows(new_pin.clone())
    );
    assert_eq!(text(&new_pin, &view), "Choose a PIN of 4 to 6 digits:");
    assert_eq!(
        go(&new_pin, "12", &view),
        notice(new_pin.clone(), "A PIN is 4 to 6 digits.")
    );
    let repeat = Menu::RepeatPin {
        code: code.clone(),
        first: Secret("4821".into()),
    };
    assert_eq!(go(&new_pin, "4821", &view), shows(repeat.clone()));
    assert_eq!(
        go(&repeat, "4822", &view),
        notice(new_pin.clone(), "The PINs did not match.")
    );
    let set = Action::SetPin {
        code,
        pin: Secret("4821".into()),
    };
    assert_eq!(go(&repeat, "4821", &view), Step::Act(set.clone()));
    assert_eq!(
        ok(after(&repeat, &set, Outcome::Done, &view)),
        shows(Menu::ConfirmName)
    );
    assert_eq!(
        text(&Menu::ConfirmName, &view),
        "Is this your shop's name?\nMama Duka\n1 Yes, open my shop\n2 No"
    );
    assert_eq!(
        go(&Menu::ConfirmName, "1", &view),
        Step::Act(Action::Activate)
    );
    assert!(matches!(go(&Menu::ConfirmName, "2", &view), Step::End(t) if t.contains("not opened")));
    assert_eq!(
        ok(after(
            &Menu::ConfirmName,
            &Action::Activate,
            Outcome::Done,
            &view
        )),
        notice(Menu::Main, "Your shop is open!")
    );
}

#[test]
fn login_counts_wrong_pins_and_locks_with_the_time() {
    let view = shop();
    assert_eq!(first(true), Menu::Login);
    assert_eq!(
        text(&Menu::Login, &view),
        "soko: Mama Duka\nEnter your PIN:"
    );
    let check = Action::CheckPin(Secret("1111".into()));
    assert_eq!(go(&Menu::Login, "1111", &view), Step::Act(check.clone()));
    assert_eq!(
        ok(after(
            &Menu::Login,
            &check,
            Outcome::WrongPin { tries_left: 2 },
            &view
        )),
        notice(Menu::Login, "Wrong PIN. 2 tries left.")
    );
    let until = view.now() + 900;
    let Step::End(locked) = ok(after(
        &Menu::Login,
        &check,
        Outcome::Locked { until },
        &view,
    )) else {
        panic!("a lock ends the session");
    };
    assert!(
        locked.contains("locked until 12:28 UTC (in 15 min)"),
        "{locked}"
    );
    assert_eq!(
        ok(after(&Menu::Login, &check, Outcome::Done, &view)),
        shows(Menu::Main)
    );
    // Secrets never show in debug output.
    assert!(!format!("{check:?}").contains("1111"));
}

#[test]
fn the_main_menu_and_going_back() {
    let view = shop();
    assert_eq!(
        text(&Menu::Main, &view),
        "Mama Duka\n1 Orders\n2 Confirm delivery\n3 Products\n4 Pending approvals\n5 Balance & withdraw\n6 Settings\n7 Pay a bill\n8 My bills"
    );
    let table = [
        ("1", Menu::Orders { page: 0 }),
        ("2", Menu::DeliverOrder),
        ("3", Menu::Products { page: 0 }),
        ("4", Menu::Approvals { page: 0 }),
        ("5", Menu::Balance),
        ("6", Menu::Settings),
        ("7", Menu::BillOptions { page: 0 }),
        ("8", Menu::Bills { page: 0 }),
    ];
    for (input, menu) in table {
        assert_eq!(go(&Menu::Main, input, &view), shows(menu.clone()));
        assert_eq!(go(&menu, "00", &view), shows(Menu::Main), "{menu:?}");
    }
    assert_eq!(
        go(&Menu::Main, "9", &view),
        notice(Menu::Main, "Invalid choice.")
    );
}

#[test]
fn orders_list_paid_ones_newest_first_with_details() {
    let view = shop();
    let list = Menu::Orders { page: 0 };
    assert_eq!(
        text(&list, &view),
        "Paid orders, newest first:\n#2 PAID 1120 sat\n#1 DONE 1120 sat\nReply with an order no.\n00 Back"
    );
    let detail = Menu::Order { number: 2, page: 0 };
    assert_eq!(go(&list, "2", &view), shows(detail.clone()));
    assert_eq!(
        go(&list, "3", &view),
        notice(list.clone(), "No paid order #3."),
        "unpaid orders are not listed"
    );
    assert_eq!(
        text(&detail, &view),
        "Order #2: PAID 1120 sat\n2 x Mango\nTo: Amina\nAddress: Moi Avenue 12\nPhone: +254722000333\nNote: Leave it at the gate\nZone: nairobi\n9 Confirm delivery\n00 Back"
    );
    assert_eq!(
        go(&detail, "9", &view),
        shows(Menu::DeliverCode { number: 2 })
    );
    assert_eq!(go(&detail, "00", &view), shows(list.clone()));
    assert_eq!(go(&list, "0", &view), notice(list.clone(), "No more."));

    let mut many = shop();
    many.orders = (1..=30).map(|n| order(n, EscrowState::Paid)).collect();
    let page = ok(render(&list, None, &many)).text;
    assert!(
        page.starts_with("Paid orders, newest first:\n#30 PAID"),
        "{page}"
    );
    assert!(page.ends_with("0 Next\n00 Back"), "{page}");
    assert_eq!(go(&list, "0", &many), shows(Menu::Orders { page: 1 }));
    assert_eq!(go(&Menu::Orders { page: 1 }, "00", &many), shows(list));
}

#[test]
fn an_order_past_its_window_can_be_reported_and_a_buyers_issue_answered() {
    let mut view = shop();
    let mut late = order(7, EscrowState::Paid);
    late.issue = IssueChoice::CanMark;
    let mut accused = order(8, EscrowState::IssueMarked);
    accused.issue = IssueChoice::CanAnswer;
    view.orders.extend([late, accused]);

    // Within its window (#2) the detail offers delivery only, and 8 does nothing.
    let fresh = Menu::Order { number: 2, page: 0 };
    assert_eq!(
        go(&fresh, "8", &view),
        notice(fresh.clone(), "Invalid choice.")
    );

    let detail = Menu::Order { number: 7, page: 0 };
    let shown = text(&detail, &view);
    // The foot shows on every page (the shipping details page on).
    assert!(
        shown.contains("\n9 Confirm delivery\n8 Report: no code\n"),
        "{shown}"
    );
    let mark = Menu::IssueMark { number: 7 };
    assert_eq!(go(&detail, "8", &view), shows(mark.clone()));
    assert_eq!(
        text(&mark, &view),
        "Order #7: report that the buyer has not given the code. This shows soko's operator your shop key; it decides if the buyer disputes.\n1 Report\n00 Back"
    );
    assert_eq!(
        go(&mark, "1", &view),
        Step::Act(Action::MarkIssue { number: 7 })
    );
    assert_eq!(go(&mark, "00", &view), shows(detail.clone()));
    assert_eq!(
        go(&mark, "2", &view),
        notice(mark.clone(), "Invalid choice.")
    );
    assert_eq!(
        ok(after(
            &mark,
            &Action::MarkIssue { number: 7 },
            Outcome::Done,
            &view
        )),
        Step::End(
            "Issue on order #7 reported. The buyer may answer; then soko's operator decides."
                .into()
        )
    );
    let refused = Outcome::Refused("order #7 is within its delivery window".into());
    assert_eq!(
        ok(after(
            &mark,
            &Action::MarkIssue { number: 7 },
            refused,
            &view
        )),
        notice(detail, "Order #7 is within its delivery window")
    );

    let detail = Menu::Order { number: 8, page: 0 };
    let shown = text(&detail, &view);
    assert!(shown.ends_with("8 Answer issue\n00 Back"), "{shown}");
    let answer = Menu::IssueAnswer { number: 8 };
    assert_eq!(go(&detail, "8", &view), shows(answer.clone()));
    assert_eq!(
        text(&answer, &view),
        "Order #8: the buyer says it got nothing.\n1 Agree: refund buyer\n2 Dispute: operator decides\n00 Back"
    );
    let concede = Action::AnswerIssue {
        number: 8,
        concede: true,
    };
    let dispute = Action::AnswerIssue {
        number: 8,
        concede: false,
    };
    assert_eq!(go(&answer, "1", &view), Step::Act(concede.clone()));
    assert_eq!(go(&answer, "2", &view), Step::Act(dispute.clone()));
    assert_eq!(
        ok(after(&answer, &dispute, Outcome::Done, &view)),
        Step::End("Order #8 disputed: soko's operator decides.".into())
    );
    assert_eq!(
        ok(after(&answer, &concede, Outcome::Done, &view)),
        Step::End("Order #8: you agreed; the buyer gets the money back.".into())
    );
}

#[test]
fn delivery_asks_the_order_then_the_code() {
    let view = shop();
    let ask = Menu::DeliverOrder;
    assert_eq!(
        text(&ask, &view),
        "Confirm delivery: enter the order no.:\n00 Back"
    );
    assert_eq!(
        go(&ask, "1", &view),
        notice(ask.clone(), "Order #1 is not waiting for delivery: done.")
    );
    assert_eq!(
        go(&ask, "9", &view),
        notice(ask.clone(), "There is no order #9.")
    );
    let code = Menu::DeliverCode { number: 2 };
    assert_eq!(go(&ask, "2", &view), shows(code.clone()));
    assert_eq!(
        text(&code, &view),
        "Order #2: 1120 sat.\nEnter the buyer's 8-digit code:\n00 Back"
    );
    assert_eq!(
        go(&code, "123", &view),
        notice(code.clone(), "A code has 8 digits.")
    );
    let deliver = Action::Deliver {
        number: 2,
        code: Secret("48213907".into()),
    };
    assert_eq!(go(&code, "48213907", &view), Step::Act(deliver.clone()));
    // A wrong code: the order is still paid, so the code is asked again with the reason.
    assert_eq!(
        ok(after(
            &code,
            &deliver,
            Outcome::Refused("wrong code for order #2; 4 tries left".into()),
            &view
        )),
        notice(code.clone(), "Wrong code for order #2; 4 tries left")
    );
    let Step::End(done) = ok(after(
        &code,
        &deliver,
        Outcome::Delivered {
            released: Sats(1120),
            payout: None,
            balance: Sats(1120),
        },
        &view,
    )) else {
        panic!("delivery ends the session");
    };
    assert_eq!(
        done,
        "Order #2 delivered: 1120 sat released to you. Balance: 1120 sat."
    );
}

#[test]
fn products_change_price_stock_and_visibility() {
    let view = shop();
    let list = Menu::Products { page: 0 };
    assert_eq!(
        text(&list, &view),
        "Products:\n1 Mango 500 sat x3\nReply with a product no.\n00 Back"
    );
    let one = Menu::Product { id: "mango".into() };
    assert_eq!(go(&list, "1", &view), shows(one.clone()));
    assert_eq!(
        go(&list, "2", &view),
        notice(list.clone(), "Invalid choice.")
    );
    assert_eq!(
        text(&one, &view),
        "Mango\nPrice: 500 sat\nStock: 3\n1 Change price\n2 Change stock\n3 Hide from buyers\n00 Back"
    );
    let price = Menu::ProductPrice { id: "mango".into() };
    assert_eq!(go(&one, "1", &view), shows(price.clone()));
    assert_eq!(
        text(&price, &view),
        "Mango: 500 sat\nNew price in sat, whole number:\n00 Back"
    );
    assert_eq!(
        go(&price, "450", &view),
        Step::Act(Action::SetPrice {
            id: "mango".into(),
            price: 450
        })
    );
    assert_eq!(
        go(&price, "4.5", &view),
        notice(price.clone(), "Enter a whole number.")
    );
    let stock = Menu::ProductStock { id: "mango".into() };
    assert_eq!(go(&one, "2", &view), shows(stock.clone()));
    assert_eq!(
        go(&stock, "0", &view),
        Step::Act(Action::SetStock {
            id: "mango".into(),
            quantity: 0
        })
    );
    let hide = Action::Hide { id: "mango".into() };
    assert_eq!(go(&one, "3", &view), Step::Act(hide.clone()));
    assert_eq!(
        ok(after(&one, &hide, Outcome::Done, &view)),
        notice(one.clone(), "Hidden from buyers.")
    );

    let mut hidden = shop();
    hidden.products = vec![mango(true)];
    assert_eq!(
        text(&one, &hidden),
        "Mango\nPrice: 500 sat\nStock: 3 (hidden)\n3 Show to buyers\n00 Back"
    );
    assert_eq!(
        go(&one, "1", &hidden),
        notice(one.clone(), "Invalid choice.")
    );
    assert_eq!(
        go(&one, "3", &hidden),
        Step::Act(Action::Show { id: "mango".into() })
    );
    let mut gone = shop();
    gone.products.clear();
    assert_eq!(
        go(&one, "1", &gone),
        notice(Menu::Products { page: 0 }, "That product is gone.")
    );
}

#[test]
fn approvals_list_what_the_store_holds() {
    let mut view = shop();
    let menu = Menu::Approvals { page: 0 };
    assert_eq!(text(&menu, &view), "No pending approvals.\n00 Back");
    view.approvals = vec![
        (
            7,
            "Product Pawpaw 300 sat, Juma".into(),
            vec!["From agent Juma".into(), "New product: Pawpaw".into()],
        ),
        (
            9,
            "Link agent Wanjiru".into(),
            vec!["From agent Wanjiru".into()],
        ),
    ];
    assert_eq!(
        text(&menu, &view),
        "Pending approvals:\n1 Product Pawpaw 300 sat, Juma\n2 Link agent Wanjiru\nReply with a no.\n00 Back"
    );
    // A number opens the proposal; 1 approves, 2 rejects, 00 goes back.
    let detail = Menu::Approval { id: 7, page: 0 };
    assert_eq!(go(&menu, "1", &view), shows(detail.clone()));
    assert_eq!(
        go(&menu, "2", &view),
        shows(Menu::Approval { id: 9, page: 0 })
    );
    assert_eq!(
        go(&menu, "3", &view),
        notice(menu.clone(), "Invalid choice.")
    );
    assert_eq!(
        text(&detail, &view),
        "From agent Juma\nNew product: Pawpaw\n1 Approve\n2 Reject\n00 Back"
    );
    assert_eq!(
        go(&detail, "1", &view),
        Step::Act(Action::Approve { id: 7 })
    );
    assert_eq!(go(&detail, "2", &view), Step::Act(Action::Reject { id: 7 }));
    assert_eq!(go(&detail, "00", &view), shows(menu.clone()));
    let approve = Action::Approve { id: 7 };
    assert_eq!(
        ok(after(&detail, &approve, Outcome::Done, &view)),
        notice(menu.clone(), "Approved.")
    );
    assert_eq!(
        ok(after(
            &detail,
            &Action::Reject { id: 7 },
            Outcome::Done,
            &view
        )),
        notice(menu.clone(), "Rejected.")
    );
    // Refused while still pending: back to the proposal with the reason.
    assert_eq!(
        ok(after(
            &detail,
            &approve,
            Outcome::Refused("stall \"duka\" does not exist; add it first".into()),
            &view
        )),
        notice(
            detail.clone(),
            "Stall \"duka\" does not exist; add it first"
        )
    );
    // Decided meanwhile (another session, or the agent withdrew it): back to the list.
    let mut decided = view.clone();
    decided.approvals.remove(0);
    assert_eq!(
        go(&detail, "1", &decided),
        notice(menu.clone(), "That proposal was decided or withdrawn.")
    );
}

#[test]
fn settings_list_agents_to_unlink_and_toggle_buyer_details() {
    let mut view = shop();
    let agents = Menu::Agents { page: 0 };
    assert_eq!(go(&Menu::Settings, "3", &view), shows(agents.clone()));
    assert_eq!(
        text(&agents, &view),
        "No agents are linked to your shop.\n00 Back"
    );
    let juma = "ab".repeat(32);
    view.agents = vec![AgentLine {
        agent: juma.clone(),
        label: "Juma".into(),
    }];
    assert_eq!(
        text(&agents, &view),
        "Your agents:\n1 Juma\nReply with a no. to unlink\n00 Back"
    );
    let confirm = Menu::AgentUnlink {
        agent: juma.clone(),
    };
    assert_eq!(go(&agents, "1", &view), shows(confirm.clone()));
    assert_eq!(
        text(&confirm, &view),
        "Unlink Juma?\nThey can no longer propose for your shop or hear of its orders.\n1 Yes, unlink\n2 No"
    );
    let unlink = Action::Unlink {
        agent: juma.clone(),
    };
    assert_eq!(go(&confirm, "1", &view), Step::Act(unlink.clone()));
    assert_eq!(go(&confirm, "2", &view), shows(agents.clone()));
    assert_eq!(
        ok(after(&confirm, &unlink, Outcome::Done, &view)),
        notice(agents.clone(), "Agent unlinked.")
    );
    // Buyer details: off by default; 4 turns them on, and again off.
    assert_eq!(
        go(&Menu::Settings, "4", &view),
        Step::Act(Action::ShareBuyer(true))
    );
    view.shop.share_buyer = true;
    assert!(text(&Menu::Settings, &view).contains("4 Buyer details to agents: on"));
    assert_eq!(
        go(&Menu::Settings, "4", &view),
        Step::Act(Action::ShareBuyer(false))
    );
}

#[test]
fn withdrawing_asks_where_and_confirms() {
    let mut view = shop();
    assert_eq!(
        text(&Menu::Balance, &view),
        "Balance: 0 sat\nNothing to withdraw yet.\n00 Back"
    );
    assert_eq!(
        go(&Menu::Balance, "2", &view),
        notice(Menu::Balance, "Nothing to withdraw yet.")
    );
    view.shop.balance = Sats(1120);
    view.shop.lightning_address = Some("mama@duka.example".into());
    assert_eq!(
        text(&Menu::Balance, &view),
        "Balance: 1120 sat\n1 Withdraw to mama@duka.example\n2 Withdraw to another address\n00 Back"
    );
    let saved = Menu::WithdrawConfirm {
        destination: "mama@duka.example".into(),
    };
    assert_eq!(go(&Menu::Balance, "1", &view), shows(saved.clone()));
    assert_eq!(go(&Menu::Balance, "2", &view), shows(Menu::WithdrawTo));
    assert_eq!(
        go(&Menu::WithdrawTo, "mama", &view),
        notice(
            Menu::WithdrawTo,
            "That is not a Lightning address (name@domain)."
        )
    );
    let other = Menu::WithdrawConfirm {
        destination: "baba@pay.example".into(),
    };
    assert_eq!(
        go(&Menu::WithdrawTo, "baba@pay.example", &view),
        shows(other.clone())
    );
    assert_eq!(
        text(&other, &view),
        "Withdraw 1120 sat to baba@pay.example?\nLightning fees come off the amount.\nEnter your PIN to send:\n00 Back"
    );
    assert_eq!(go(&other, "00", &view), shows(Menu::Balance));
    assert_eq!(
        go(&other, "1", &view),
        notice(other.clone(), "A PIN is 4 to 6 digits.")
    );
    let withdraw = Action::Withdraw {
        destination: "baba@pay.example".into(),
        pin: Secret("4821".into()),
    };
    assert_eq!(go(&other, "4821", &view), Step::Act(withdraw.clone()));
    assert_eq!(
        ok(after(
            &other,
            &withdraw,
            Outcome::WrongPin { tries_left: 1 },
            &view
        )),
        notice(other.clone(), "Wrong PIN. 1 try left.")
    );
    assert_eq!(
        ok(after(
            &other,
            &withdraw,
            Outcome::Withdrawn {
                amount: Sats(1109),
                fee: Sats(0),
                balance: Sats(11)
            },
            &view
        )),
        Step::End("Sent 1109 sat (fee 0 sat). Balance: 11 sat.".into())
    );
    assert_eq!(
        ok(after(
            &other,
            &withdraw,
            Outcome::Refused("not sent: no route. Your balance is kept.".into()),
            &view
        )),
        notice(Menu::Balance, "Not sent: no route. Your balance is kept.")
    );
}

#[test]
fn settings_change_the_address_and_the_pin() {
    let view = shop();
    assert_eq!(
        text(&Menu::Settings, &view),
        "Settings\n1 Lightning address\n2 Change PIN\n3 Agents\n4 Buyer details to agents: off\n00 Back"
    );
    assert_eq!(
        go(&Menu::Settings, "1", &view),
        shows(Menu::LightningAddress)
    );
    assert_eq!(
        text(&Menu::LightningAddress, &view),
        "Lightning address: none\nType a new one:\n00 Back"
    );
    let confirm = Menu::AddressConfirm {
        address: "mama@duka.example".into(),
    };
    assert_eq!(
        go(&Menu::LightningAddress, "mama@duka.example", &view),
        shows(confirm.clone())
    );
    assert_eq!(
        text(&confirm, &view),
        "Save mama@duka.example for your payouts?\nEnter your PIN to save:\n00 Back"
    );
    assert_eq!(go(&confirm, "00", &view), shows(Menu::Settings));
    let set = Action::SetLightningAddress {
        address: "mama@duka.example".into(),
        pin: Secret("4821".into()),
    };
    assert_eq!(go(&confirm, "4821", &view), Step::Act(set.clone()));
    assert_eq!(
        ok(after(
            &confirm,
            &set,
            Outcome::WrongPin { tries_left: 2 },
            &view
        )),
        notice(confirm.clone(), "Wrong PIN. 2 tries left.")
    );
    assert_eq!(
        ok(after(&confirm, &set, Outcome::Done, &view)),
        notice(Menu::Settings, "Lightning address saved.")
    );
    assert_eq!(go(&Menu::Settings, "2", &view), shows(Menu::OldPin));
    let old = Secret("4821".into());
    let new_pin = Menu::NewPinChange { old: old.clone() };
    assert_eq!(go(&Menu::OldPin, "4821", &view), shows(new_pin.clone()));
    let again = Menu::RepeatPinChange {
        old: old.clone(),
        new: Secret("9090".into()),
    };
    assert_eq!(go(&new_pin, "9090", &view), shows(again.clone()));
    assert_eq!(
        go(&again, "9091", &view),
        notice(new_pin, "The PINs did not match.")
    );
    let change = Action::ChangePin {
        old,
        new: Secret("9090".into()),
    };
    assert_eq!(go(&again, "9090", &view), Step::Act(change.clone()));
    assert_eq!(
        ok(after(
            &again,
            &change,
            Outcome::WrongPin { tries_left: 1 },
            &view
        )),
        notice(Menu::OldPin, "Wrong PIN. 1 try left.")
    );
    assert_eq!(
        ok(after(&again, &change, Outcome::Done, &view)),
        notice(Menu::Settings, "PIN changed.")
    );
}

// ---- every screen fits, over generated shops ----

fn long_text(max: usize) -> impl Strategy<Value = String> {
    // Letters, spaces, punctuation and some multi-byte characters, which count as one.
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            Just(' '),
            Just('é'),
            Just('ß'),
            Just('#'),
            Just('\n'),
        ],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn state() -> impl Strategy<Value = EscrowState> {
    prop_oneof![
        Just(EscrowState::Paid),
        Just(EscrowState::Delivered),
        Just(EscrowState::PaidOut),
        Just(EscrowState::Refunded),
        Just(EscrowState::Disputed),
        Just(EscrowState::AwaitingPayment),
        Just(EscrowState::Expired),
    ]
}

fn detail() -> impl Strategy<Value = OrderDetail> {
    (
        1..u64::MAX,
        state(),
        any::<u64>(),
        proptest::collection::vec((long_text(80), any::<u64>()), 1..12),
        proptest::option::of((
            proptest::option::of(long_text(120)),
            proptest::option::of(long_text(300)),
            proptest::option::of(long_text(30)),
            proptest::option::of(long_text(300)),
            long_text(70),
        )),
    )
        .prop_map(|(number, state, total, items, shipping)| OrderDetail {
            line: OrderLine {
                number,
                state,
                total: Sats(total),
            },
            items,
            shipping: shipping.map(|(name, address, phone, message, zone)| Shipping {
                name,
                address,
                phone,
                email: None,
                message,
                zone,
            }),
            // Every kind of issue screen, spread over the orders.
            issue: [
                IssueChoice::None,
                IssueChoice::CanMark,
                IssueChoice::CanAnswer,
            ][(number % 3) as usize],
        })
}

fn product_line() -> impl Strategy<Value = ProductLine> {
    (
        "[a-z0-9-]{1,64}",
        long_text(100),
        any::<u64>(),
        prop_oneof![Just("sat".to_owned()), "[A-Z]{3}"],
        proptest::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(
            |(id, name, price, currency, quantity, hidden)| ProductLine {
                id,
                name,
                price: format!("{price} {currency}"),
                currency,
                quantity,
                hidden,
            },
        )
}

fn fake() -> impl Strategy<Value = Fake> {
    (
        long_text(64),
        any::<bool>(),
        proptest::option::of(long_text(200)),
        any::<u64>(),
        proptest::collection::vec(detail(), 0..40),
        proptest::collection::vec(product_line(), 0..30),
        proptest::collection::vec(
            (
                any::<u64>(),
                long_text(200),
                proptest::collection::vec(long_text(300), 0..12),
            ),
            0..10,
        ),
        proptest::collection::vec(
            ("[0-9a-f]{64}", long_text(100)).prop_map(|(agent, label)| AgentLine { agent, label }),
            0..12,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                name,
                pending,
                lightning_address,
                balance,
                orders,
                products,
                approvals,
                agents,
                share_buyer,
            )| Fake {
                bill_options: agents
                    .iter()
                    .map(|a| BillOption {
                        choice: mpesa(),
                        label: a.label.clone(),
                    })
                    .collect(),
                bills: ["RECEIPT_SUBMITTED", "COMPLETED", "STARTING"]
                    .iter()
                    .enumerate()
                    .map(|(i, state)| {
                        bill(&format!("b{i}"), &name, state, lightning_address.as_deref())
                    })
                    .collect(),
                shop: Shop {
                    name,
                    pending,
                    lightning_address,
                    balance: Sats(balance),
                    share_buyer,
                },
                orders,
                products,
                approvals,
                agents,
            },
        )
}

/// Every position the tree has, over this shop's data.
fn positions(view: &Fake, destination: &str) -> Vec<Menu> {
    let secret = || Secret("1234".into());
    let mut menus = vec![
        Menu::Activation,
        Menu::NewPin { code: secret() },
        Menu::RepeatPin {
            code: secret(),
            first: secret(),
        },
        Menu::ConfirmName,
        Menu::Login,
        Menu::Main,
        Menu::DeliverOrder,
        Menu::Balance,
        Menu::WithdrawTo,
        Menu::WithdrawConfirm {
            destination: destination.to_owned(),
        },
        Menu::Settings,
        Menu::LightningAddress,
        Menu::AddressConfirm {
            address: destination.to_owned(),
        },
        Menu::OldPin,
        Menu::NewPinChange { old: secret() },
        Menu::RepeatPinChange {
            old: secret(),
            new: secret(),
        },
    ];
    for page in 0..3 {
        menus.push(Menu::Orders { page });
        menus.push(Menu::Products { page });
        menus.push(Menu::Approvals { page });
        menus.push(Menu::Agents { page });
    }
    for (id, _, _) in &view.approvals {
        for page in 0..4 {
            menus.push(Menu::Approval { id: *id, page });
        }
    }
    for a in &view.agents {
        menus.push(Menu::AgentUnlink {
            agent: a.agent.clone(),
        });
    }
    for o in &view.orders {
        for page in 0..4 {
            menus.push(Menu::Order {
                number: o.line.number,
                page,
            });
        }
        menus.push(Menu::DeliverCode {
            number: o.line.number,
        });
        menus.push(Menu::IssueMark {
            number: o.line.number,
        });
        menus.push(Menu::IssueAnswer {
            number: o.line.number,
        });
    }
    for page in 0..3 {
        menus.push(Menu::BillOptions { page });
        menus.push(Menu::Bills { page });
    }
    let choice = mpesa();
    menus.push(Menu::BillReference {
        choice: choice.clone(),
    });
    menus.push(Menu::BillAmount {
        choice: choice.clone(),
        reference: destination.to_owned(),
    });
    menus.push(Menu::BillConfirm {
        choice,
        reference: destination.to_owned(),
        amount: "1500".to_owned(),
    });
    for b in &view.bills {
        menus.push(Menu::Bill {
            id: b.line.id.clone(),
        });
        menus.push(Menu::BillPaid {
            id: b.line.id.clone(),
        });
    }
    for p in &view.products {
        menus.push(Menu::Product { id: p.id.clone() });
        menus.push(Menu::ProductPrice { id: p.id.clone() });
        menus.push(Menu::ProductStock { id: p.id.clone() });
    }
    menus
}

fn assert_fits(screen: &Screen, at: &Menu) {
    let wire = screen.wire();
    assert!(
        wire.chars().count() <= SCREEN_LIMIT,
        "{} characters at {at:?}:\n{wire}",
        wire.chars().count()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_screen_fits_the_handset(
        view in fake(),
        notice in proptest::option::of(long_text(250)),
        destination in long_text(200),
        inputs in proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,2}", Just("00".to_owned()), Just("1234".to_owned()),
                Just("48213907".to_owned()), Just("mama@duka.example".to_owned()), "[0-9*#]{0,12}"
            ],
            0..25,
        ),
    ) {
        for menu in positions(&view, &destination) {
            let layout = ok(layout(&menu, notice.as_deref(), &view));
            for page in 0..layout.page_count() {
                let screen = Screen { text: layout.render(page).text, end: false };
                assert_fits(&screen, &menu);
            }
        }
        // A walk through the tree with whatever the keypad sends, actions answered with
        // every kind of outcome: each screen shown fits too.
        let outcomes = [
            Outcome::Done,
            Outcome::WrongPin { tries_left: 2 },
            Outcome::Refused(notice.clone().unwrap_or_default()),
            Outcome::Delivered { released: Sats(u64::MAX), payout: notice.clone(), balance: Sats(u64::MAX) },
            Outcome::Withdrawn { amount: Sats(u64::MAX), fee: Sats(u64::MAX), balance: Sats(u64::MAX) },
            Outcome::WithdrawalPending { amount: Sats(u64::MAX), balance: Sats(u64::MAX) },
            Outcome::Locked { until: u64::MAX / 2 },
            Outcome::BillOffered { id: "b0".to_owned() },
        ];
        let mut menu = Menu::Main;
        for (i, input) in inputs.iter().enumerate() {
            let mut next = ok(step(&menu, input, &view));
            if let Step::Act(action) = &next {
                let outcome = outcomes[i % outcomes.len()].clone();
                next = ok(after(&menu, action, outcome, &view));
            }
            match next {
                Step::Show { menu: to, notice } => {
                    assert_fits(&ok(render(&to, notice.as_deref(), &view)), &to);
                    menu = to;
                }
                Step::End(text) => {
                    assert_fits(&Screen::end(&text), &menu);
                    menu = Menu::Main;
                }
                Step::Act(_) => prop_assert!(false, "after() never asks for another action"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever a handset sends, at every position (issue 11): a next step, never a panic,
    /// and the screen it leads to fits. The address screens read the text as a Lightning
    /// address, where a multi-byte character once panicked.
    #[test]
    fn any_input_anywhere_is_a_step(
        view in fake(),
        inputs in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "[0-9*#]{0,40}",
                Just("a€€@x.y".to_owned()),
                Just("lnurlé@x".to_owned()),
            ],
            1..5,
        ),
    ) {
        for menu in positions(&view, "mama@duka.example") {
            for input in &inputs {
                let next = match ok(step(&menu, input, &view)) {
                    Step::Act(action) => ok(after(&menu, &action, Outcome::Done, &view)),
                    next => next,
                };
                match next {
                    Step::Show { menu: to, notice } => {
                        assert_fits(&ok(render(&to, notice.as_deref(), &view)), &to);
                    }
                    Step::End(text) => assert_fits(&Screen::end(&text), &menu),
                    Step::Act(_) => prop_assert!(false, "after() never asks for another action"),
                }
            }
        }
    }
}

#[test]
fn a_bill_is_chosen_numbered_priced_and_confirmed_with_the_pin() {
    let mut view = shop();
    view.shop.balance = Sats(200_000);
    let options = Menu::BillOptions { page: 0 };
    assert_eq!(
        text(&options, &view),
        "Pay a bill from your balance, by:\n1 M-Pesa paybill KES\n00 Back"
    );
    assert_eq!(
        go(&options, "2", &view),
        notice(options.clone(), "Invalid choice.")
    );
    assert_eq!(go(&options, "00", &view), shows(Menu::Main));
    let reference = Menu::BillReference { choice: mpesa() };
    assert_eq!(go(&options, "1", &view), shows(reference.clone()));
    assert_eq!(text(&reference, &view), "Type the paybill number:\n00 Back");
    let amount = Menu::BillAmount {
        choice: mpesa(),
        reference: "888880".into(),
    };
    assert_eq!(go(&reference, "888880", &view), shows(amount.clone()));
    assert_eq!(text(&amount, &view), "Amount in KES:\n00 Back");
    assert_eq!(
        go(&amount, "12.5", &view),
        notice(
            amount.clone(),
            "Type the amount in whole units, digits only."
        )
    );
    let confirm = Menu::BillConfirm {
        choice: mpesa(),
        reference: "888880".into(),
        amount: "1500".into(),
    };
    assert_eq!(go(&amount, "1500", &view), shows(confirm.clone()));
    assert_eq!(
        text(&confirm, &view),
        "Pay KES 1500 to paybill 888880?\n107100 sat from balance: 100000 to payer, 6000 bond back after, 1100 fee\nPIN to offer it:\n00 Back"
    );
    // The exchange's refusal, and a balance too small, are read out where they happen.
    let bad = Menu::BillAmount {
        choice: mpesa(),
        reference: "0".into(),
    };
    assert_eq!(
        go(&bad, "1500", &view),
        notice(bad.clone(), "Provider: that is not a paybill number")
    );
    view.shop.balance = Sats(107_099);
    assert_eq!(
        go(&amount, "1500", &view),
        notice(
            amount.clone(),
            "That takes 107100 sat; your balance is 107099 sat."
        )
    );
    let pay = Action::PayBill {
        choice: mpesa(),
        reference: "888880".into(),
        amount: "1500".into(),
        pin: Secret("4821".into()),
    };
    assert_eq!(go(&confirm, "4821", &view), Step::Act(pay.clone()));
    assert_eq!(
        ok(after(
            &confirm,
            &pay,
            Outcome::WrongPin { tries_left: 2 },
            &view
        )),
        notice(confirm.clone(), "Wrong PIN. 2 tries left.")
    );
    assert_eq!(
        ok(after(
            &confirm,
            &pay,
            Outcome::BillOffered { id: "b3".into() },
            &view
        )),
        notice(Menu::Bill { id: "b3".into() }, "Your bill is on offer.")
    );
}

#[test]
fn a_bill_shows_its_receipt_and_is_confirmed_paid_with_the_pin() {
    let view = shop();
    let bills = Menu::Bills { page: 0 };
    assert_eq!(
        text(&bills, &view),
        "Your bills, newest first:\n1 KES 1500 M-Pesa PAID? check and confirm\n2 KES 200 M-Pesa done\n00 Back"
    );
    let waiting = Menu::Bill { id: "b2".into() };
    assert_eq!(go(&bills, "1", &view), shows(waiting.clone()));
    assert_eq!(
        text(&waiting, &view),
        "KES 1500 M-Pesa: PAID? check and confirm\nPayer earns 100000 sat\nReceipt: Confirmed. KES 1,500.00 paid to 888880\n1 Confirm paid\n2 Not paid\n00 Back"
    );
    assert_eq!(
        go(&waiting, "2", &view),
        notice(waiting.clone(), bills::NOT_PAID)
    );
    let paid = Menu::BillPaid { id: "b2".into() };
    assert_eq!(go(&waiting, "1", &view), shows(paid.clone()));
    let confirm = Action::ConfirmBill {
        id: "b2".into(),
        pin: Secret("4821".into()),
    };
    assert_eq!(go(&paid, "4821", &view), Step::Act(confirm.clone()));
    assert_eq!(
        ok(after(&paid, &confirm, Outcome::Done, &view)),
        notice(waiting.clone(), "Confirmed: the payer is paid.")
    );
    // A finished bill offers nothing to confirm.
    let done = Menu::Bill { id: "b1".into() };
    assert_eq!(
        go(&done, "1", &view),
        notice(done.clone(), "Invalid choice.")
    );
    assert!(!text(&done, &view).contains("Confirm paid"));
    // A long receipt is cut, the options stay.
    let mut long = shop();
    long.bills[0].receipt = Some("word ".repeat(100));
    let screen = text(&waiting, &long);
    assert!(
        screen.chars().count() <= crate::ussd::screen::BODY_LIMIT,
        "{screen}"
    );
    assert!(
        screen.ends_with("1 Confirm paid\n2 Not paid\n00 Back"),
        "{screen}"
    );
}
