//! Menu 5: the balance and withdrawing it, to the merchant's address or another, confirmed with the PIN.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let back = input == "00";
    match menu {
        Menu::Balance => {
            let shop = view.shop()?;
            match input {
                "00" => show(Menu::Main),
                _ if shop.balance == Sats::ZERO => again(menu, "Nothing to withdraw yet."),
                "1" => match shop.lightning_address {
                    Some(destination) => show(Menu::WithdrawConfirm { destination }),
                    None => again(menu, "Invalid choice."),
                },
                "2" => show(Menu::WithdrawTo),
                _ => again(menu, "Invalid choice."),
            }
        }
        Menu::WithdrawTo => {
            if back {
                return show(Menu::Balance);
            }
            match address(input) {
                Ok(destination) => show(Menu::WithdrawConfirm { destination }),
                Err(why) => again(menu, &why),
            }
        }
        Menu::WithdrawConfirm { destination } => {
            if back {
                return show(Menu::Balance);
            }
            match pin(input) {
                Some(pin) => Ok(Step::Act(Action::Withdraw {
                    destination: destination.clone(),
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
        Menu::Balance => {
            let shop = view.shop()?;
            out.head.push(format!("Balance: {} sat", shop.balance.0));
            if shop.balance == Sats::ZERO {
                out.head.push("Nothing to withdraw yet.".to_owned());
            } else {
                if let Some(address) = &shop.lightning_address {
                    out.foot.push(format!("1 Withdraw to {}", cut(address, 40)));
                }
                out.foot.push("2 Withdraw to another address".to_owned());
            }
            out.back = true;
        }
        Menu::WithdrawTo => {
            out.foot = lines(&["Type the Lightning address (name@domain):"]);
            out.back = true;
        }
        Menu::WithdrawConfirm { destination } => {
            let shop = view.shop()?;
            out.head.push(format!(
                "Withdraw {} sat to {}?",
                shop.balance.0,
                cut(destination, 60)
            ));
            out.head
                .push("Lightning fees come off the amount.".to_owned());
            out.foot = lines(&["Enter your PIN to send:"]);
            out.back = true;
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
