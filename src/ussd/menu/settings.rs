//! Menu 6: the Lightning address, the PIN, the linked agents and whether they get buyers' details.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let back = input == "00";
    match menu {
        Menu::AddressConfirm { address } => {
            if back {
                return show(Menu::Settings);
            }
            match pin(input) {
                Some(pin) => Ok(Step::Act(Action::SetLightningAddress {
                    address: address.clone(),
                    pin,
                })),
                None => again(menu, "A PIN is 4 to 6 digits."),
            }
        }
        Menu::Settings => match input {
            "1" => show(Menu::LightningAddress),
            "2" => show(Menu::OldPin),
            "3" => show(Menu::Agents { page: 0 }),
            "4" => Ok(Step::Act(Action::ShareBuyer(!view.shop()?.share_buyer))),
            "00" => show(Menu::Main),
            _ => again(menu, "Invalid choice."),
        },
        Menu::Agents { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Settings)? {
                return Ok(next);
            }
            match chosen(input, &view.agents()?) {
                Some(line) => show(Menu::AgentUnlink {
                    agent: line.agent.clone(),
                }),
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::AgentUnlink { agent } => {
            if !view.agents()?.iter().any(|a| &a.agent == agent) {
                return Ok(Step::Show {
                    menu: Menu::Agents { page: 0 },
                    notice: Some("That agent is not linked any more.".to_owned()),
                });
            }
            match input {
                "1" => Ok(Step::Act(Action::Unlink {
                    agent: agent.clone(),
                })),
                "2" | "00" => show(Menu::Agents { page: 0 }),
                _ => again(menu, "Invalid choice."),
            }
        }
        Menu::LightningAddress => {
            if back {
                return show(Menu::Settings);
            }
            match address(input) {
                Ok(address) => show(Menu::AddressConfirm { address }),
                Err(why) => again(menu, &why),
            }
        }
        Menu::OldPin => {
            if back {
                return show(Menu::Settings);
            }
            match pin(input) {
                Some(old) => show(Menu::NewPinChange { old }),
                None => again(menu, "A PIN is 4 to 6 digits."),
            }
        }
        Menu::NewPinChange { old } => {
            if back {
                return show(Menu::Settings);
            }
            match pin(input) {
                Some(new) => show(Menu::RepeatPinChange {
                    old: old.clone(),
                    new,
                }),
                None => again(menu, "A PIN is 4 to 6 digits."),
            }
        }
        Menu::RepeatPinChange { old, new } => {
            if back {
                return show(Menu::Settings);
            }
            if input == new.0 {
                Ok(Step::Act(Action::ChangePin {
                    old: old.clone(),
                    new: new.clone(),
                }))
            } else {
                Ok(Step::Show {
                    menu: Menu::NewPinChange { old: old.clone() },
                    notice: Some("The PINs did not match.".to_owned()),
                })
            }
        }
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::AddressConfirm { address } => {
            out.head
                .push(format!("Save {} for your payouts?", cut(address, 60)));
            out.foot = lines(&["Enter your PIN to save:"]);
            out.back = true;
        }
        Menu::Settings => {
            out.head.push("Settings".to_owned());
            out.foot = vec![
                "1 Lightning address".to_owned(),
                "2 Change PIN".to_owned(),
                "3 Agents".to_owned(),
                format!(
                    "4 Buyer details to agents: {}",
                    if view.shop()?.share_buyer {
                        "on"
                    } else {
                        "off"
                    }
                ),
            ];
            out.back = true;
        }
        Menu::Agents { .. } => {
            let agents = view.agents()?;
            if agents.is_empty() {
                out.head
                    .push("No agents are linked to your shop.".to_owned());
            } else {
                out.head.push("Your agents:".to_owned());
                out.items = agents
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("{} {}", i + 1, a.label))
                    .collect();
                out.foot = lines(&["Reply with a no. to unlink"]);
            }
            out.back = true;
        }
        Menu::AgentUnlink { agent } => {
            let label = view
                .agents()?
                .into_iter()
                .find(|a| &a.agent == agent)
                .map_or_else(|| "this agent".to_owned(), |a| a.label);
            out.head.push(format!("Unlink {}?", cut(&label, 64)));
            out.head
                .push("They can no longer propose for your shop or hear of its orders.".to_owned());
            out.foot = lines(&["1 Yes, unlink", "2 No"]);
        }
        Menu::LightningAddress => {
            let now = view.shop()?.lightning_address;
            out.head.push(format!(
                "Lightning address: {}",
                now.as_deref().map_or("none".to_owned(), |a| cut(a, 60))
            ));
            out.foot = lines(&["Type a new one:"]);
            out.back = true;
        }
        Menu::OldPin => {
            out.foot = lines(&["Enter your current PIN:"]);
            out.back = true;
        }
        Menu::NewPinChange { .. } => {
            out.foot = lines(&["Choose a new PIN of 4 to 6 digits:"]);
            out.back = true;
        }
        Menu::RepeatPinChange { .. } => {
            out.foot = lines(&["Enter the new PIN again:"]);
            out.back = true;
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
