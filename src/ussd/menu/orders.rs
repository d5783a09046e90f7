//! Menus 1 and 2: paid orders, one order in detail, and confirming a delivery with the buyer's code;
//! from an order's detail, reporting a buyer who withholds the code or answering its issue.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let back = input == "00";
    match menu {
        Menu::Orders { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Main)? {
                return Ok(next);
            }
            match number(input) {
                Some(n) => match view.order(n)? {
                    Some(order) if listed(order.line.state) => {
                        show(Menu::Order { number: n, page: 0 })
                    }
                    _ => again(menu, &format!("No paid order #{n}.")),
                },
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::Order { number, page } => {
            let up = Menu::Orders { page: 0 };
            match paging(menu, *page, input, view, up)? {
                Some(next) => Ok(next),
                None if input == "9" => match view.order(*number)? {
                    Some(order) if order.line.state == EscrowState::Paid => {
                        show(Menu::DeliverCode { number: *number })
                    }
                    _ => again(menu, "Invalid choice."),
                },
                None if input == "8" => match view.order(*number)?.map(|o| o.issue) {
                    Some(IssueChoice::CanMark) => show(Menu::IssueMark { number: *number }),
                    Some(IssueChoice::CanAnswer) => show(Menu::IssueAnswer { number: *number }),
                    _ => again(menu, "Invalid choice."),
                },
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::DeliverOrder => {
            if back {
                return show(Menu::Main);
            }
            match number(input) {
                Some(n) => match view.order(n)? {
                    Some(order) if order.line.state == EscrowState::Paid => {
                        show(Menu::DeliverCode { number: n })
                    }
                    Some(order) => again(
                        menu,
                        &format!(
                            "Order #{n} is not waiting for delivery: {}.",
                            status(order.line.state).to_lowercase()
                        ),
                    ),
                    None => again(menu, &format!("There is no order #{n}.")),
                },
                None => again(menu, "Enter an order number."),
            }
        }
        Menu::IssueMark { number } => match input {
            "00" => show(Menu::Order {
                number: *number,
                page: 0,
            }),
            "1" => Ok(Step::Act(Action::MarkIssue { number: *number })),
            _ => again(menu, "Invalid choice."),
        },
        Menu::IssueAnswer { number } => match input {
            "00" => show(Menu::Order {
                number: *number,
                page: 0,
            }),
            "1" | "2" => Ok(Step::Act(Action::AnswerIssue {
                number: *number,
                concede: input == "1",
            })),
            _ => again(menu, "Invalid choice."),
        },
        Menu::DeliverCode { number } => {
            if back {
                return show(Menu::DeliverOrder);
            }
            match normalize(input) {
                Some(code) => Ok(Step::Act(Action::Deliver {
                    number: *number,
                    code: Secret(code),
                })),
                None => again(menu, "A code has 8 digits."),
            }
        }
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::Orders { .. } => {
            let orders = view.orders()?;
            if orders.is_empty() {
                out.head.push("No paid orders yet.".to_owned());
            } else {
                out.head.push("Paid orders, newest first:".to_owned());
                out.items = orders
                    .iter()
                    .map(|o| format!("#{} {} {} sat", o.number, status(o.state), o.total.0))
                    .collect();
                out.foot = lines(&["Reply with an order no."]);
            }
            out.back = true;
        }
        Menu::Order { number, .. } => {
            out.back = true;
            let Some(order) = view.order(*number)? else {
                out.head.push(format!("There is no order #{number}."));
                return Ok(());
            };
            out.head.push(format!(
                "Order #{number}: {} {} sat",
                status(order.line.state),
                order.line.total.0
            ));
            out.wrap = true;
            out.items = order
                .items
                .iter()
                .map(|(name, units)| format!("{units} x {name}"))
                .collect();
            match &order.shipping {
                None => out.items.push("No shipping details stored.".to_owned()),
                Some(s) => {
                    let fields = [
                        ("To", &s.name),
                        ("Address", &s.address),
                        ("Phone", &s.phone),
                        ("Email", &s.email),
                        ("Note", &s.message),
                    ];
                    for (label, value) in fields {
                        if let Some(value) = value {
                            out.items.push(format!("{label}: {value}"));
                        }
                    }
                    if !s.zone.is_empty() {
                        out.items.push(format!("Zone: {}", s.zone));
                    }
                }
            }
            match (order.line.state == EscrowState::Paid, order.issue) {
                (true, IssueChoice::CanMark) => {
                    out.foot = lines(&["9 Confirm delivery", "8 Report: no code"]);
                }
                (true, _) => out.foot = lines(&["9 Confirm delivery"]),
                (false, IssueChoice::CanAnswer) => out.foot = lines(&["8 Answer issue"]),
                (false, _) => {}
            }
        }
        Menu::IssueMark { number } => {
            out.head.push(format!(
                "Order #{number}: report that the buyer has not given the code. This shows soko's operator your shop key; it decides if the buyer disputes."
            ));
            out.foot = lines(&["1 Report"]);
            out.back = true;
        }
        Menu::IssueAnswer { number } => {
            out.head
                .push(format!("Order #{number}: the buyer says it got nothing."));
            out.foot = lines(&["1 Agree: refund buyer", "2 Dispute: operator decides"]);
            out.back = true;
        }
        Menu::DeliverOrder => {
            out.foot = lines(&["Confirm delivery: enter the order no.:"]);
            out.back = true;
        }
        Menu::DeliverCode { number } => {
            if let Some(order) = view.order(*number)? {
                out.head
                    .push(format!("Order #{number}: {} sat.", order.line.total.0));
            }
            out.foot = lines(&["Enter the buyer's 8-digit code:"]);
            out.back = true;
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
