//! First use and login: the activation code, choosing a PIN, confirming the shop name, the PIN at each dial.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<E>(menu: &Menu, input: &str) -> Result<Step, E> {
    match menu {
        Menu::Activation => {
            let digits = input.len() == ACTIVATION_DIGITS && input.bytes().all(|b| b.is_ascii_digit());
            if digits {
                Ok(Step::Act(Action::CheckActivation(Secret(input.to_owned()))))
            } else {
                again(menu, "An activation code has 12 digits.")
            }
        }
        Menu::NewPin { code } => match pin(input) {
            Some(first) => show(Menu::RepeatPin {
                code: code.clone(),
                first,
            }),
            None => again(menu, "A PIN is 4 to 6 digits."),
        },
        Menu::RepeatPin { code, first } => {
            if input == first.0 {
                Ok(Step::Act(Action::SetPin {
                    code: code.clone(),
                    pin: first.clone(),
                }))
            } else {
                Ok(Step::Show {
                    menu: Menu::NewPin { code: code.clone() },
                    notice: Some("The PINs did not match.".to_owned()),
                })
            }
        }
        Menu::ConfirmName => match input {
            "1" => Ok(Step::Act(Action::Activate)),
            "2" => Ok(Step::End(
                "Your shop was not opened. Ask your agent or soko's operator to correct its name, then dial again.".to_owned(),
            )),
            _ => again(menu, "Invalid choice."),
        },
        Menu::Login => match pin(input) {
            Some(pin) => Ok(Step::Act(Action::CheckPin(pin))),
            None => again(menu, "A PIN is 4 to 6 digits."),
        },
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::Activation => {
            let shop = view.shop()?;
            out.head.push(if shop.pending {
                format!("Welcome to soko, {}!", shop.name)
            } else {
                format!("soko: {}", shop.name)
            });
            out.foot =
                lines(&["Enter the 12-digit activation code from your agent or soko's operator:"]);
        }
        Menu::NewPin { .. } => out.foot = lines(&["Choose a PIN of 4 to 6 digits:"]),
        Menu::RepeatPin { .. } => out.foot = lines(&["Enter the same PIN again:"]),
        Menu::ConfirmName => {
            out.head.push("Is this your shop's name?".to_owned());
            out.head.push(view.shop()?.name);
            out.foot = lines(&["1 Yes, open my shop", "2 No"]);
        }
        Menu::Login => {
            out.head.push(format!("soko: {}", view.shop()?.name));
            out.foot = lines(&["Enter your PIN:"]);
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
