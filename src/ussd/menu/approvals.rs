//! Menu 4: agents' proposals waiting for the merchant, approve or reject.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    match menu {
        Menu::Approvals { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Main)? {
                return Ok(next);
            }
            match chosen(input, &view.approvals()?) {
                Some(line) => show(Menu::Approval {
                    id: line.id,
                    page: 0,
                }),
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::Approval { id, page } => {
            if view.approval(*id)?.is_none() {
                return Ok(Step::Show {
                    menu: Menu::Approvals { page: 0 },
                    notice: Some("That proposal was decided or withdrawn.".to_owned()),
                });
            }
            match paging(menu, *page, input, view, Menu::Approvals { page: 0 })? {
                Some(next) => Ok(next),
                None => match input {
                    "1" => Ok(Step::Act(Action::Approve { id: *id })),
                    "2" => Ok(Step::Act(Action::Reject { id: *id })),
                    _ => again(menu, "Invalid choice."),
                },
            }
        }
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::Approvals { .. } => {
            let approvals = view.approvals()?;
            if approvals.is_empty() {
                out.head.push("No pending approvals.".to_owned());
            } else {
                out.head.push("Pending approvals:".to_owned());
                out.items = approvals
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("{} {}", i + 1, a.summary))
                    .collect();
                out.foot = lines(&["Reply with a no."]);
            }
            out.back = true;
        }
        Menu::Approval { id, .. } => {
            out.back = true;
            let Some(detail) = view.approval(*id)? else {
                out.head
                    .push("That proposal was decided or withdrawn.".to_owned());
                return Ok(());
            };
            out.wrap = true;
            out.items = detail;
            out.foot = lines(&["1 Approve", "2 Reject"]);
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
