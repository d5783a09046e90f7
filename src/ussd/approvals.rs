//! What merchants read about agents' proposals on their handsets (USSD menu 4): the list
//! line and the detail screen. The agents domain keeps the proposals; the words are the
//! menus'.

use nostr_sdk::PublicKey;

use crate::agents::proposals::{Proposal, Proposed};
use crate::agents::Desk;
use crate::market::pricing::price_text;
use crate::market::Merchants;
use crate::proto::nip15::KIND_STALL;

/// The line menu 4 lists a pending proposal with.
pub fn summary(desk: &Desk, merchants: &Merchants, proposal: &Proposal) -> String {
    let by = desk.agent_label(&proposal.agent);
    match &proposal.proposed {
        Proposed::Link => format!("Link agent {by}"),
        Proposed::Stall(stall) => format!("Stall {} ({}), {by}", stall.name, stall.currency),
        Proposed::Product(product) => format!(
            "Product {} {}, {by}",
            product.name,
            price_text(product.price, &product.currency)
        ),
        Proposed::Delete { kind, id } => {
            format!(
                "Delete {} {}, {by}",
                listing_word(*kind),
                listing_name(merchants, &proposal.merchant, *kind, id)
            )
        }
    }
}

/// The detail screen's lines for a proposal: who asks, and what exactly.
pub fn details(desk: &Desk, merchants: &Merchants, proposal: &Proposal) -> Vec<String> {
    let mut lines = vec![format!("From agent {}", desk.agent_label(&proposal.agent))];
    let merchant = Some(proposal.merchant);
    match &proposal.proposed {
        Proposed::Link => lines.push(
            "Wants to be your agent: to propose stalls and products for you and hear of your paid orders.".to_owned(),
        ),
        Proposed::Stall(stall) => {
            let exists = merchant
                .and_then(|m| merchants.stall(&m, &stall.id).ok().flatten())
                .is_some();
            lines.push(format!("{} stall: {}", if exists { "Change" } else { "New" }, stall.name));
            lines.push(format!("Currency: {}", stall.currency));
            for zone in &stall.shipping {
                lines.push(format!(
                    "Ships to {}: {}",
                    zone.name.as_deref().unwrap_or(&zone.id),
                    price_text(zone.cost, &stall.currency)
                ));
            }
            if let Some(about) = &stall.description {
                lines.push(format!("About: {about}"));
            }
        }
        Proposed::Product(product) => {
            let exists = merchant
                .and_then(|m| merchants.product(&m, &product.id).ok().flatten())
                .is_some();
            lines.push(format!("{} product: {}", if exists { "Change" } else { "New" }, product.name));
            lines.push(format!(
                "Price: {}",
                price_text(product.price, &product.currency)
            ));
            lines.push(format!(
                "Stock: {}",
                product.quantity.map_or_else(|| "unlimited".to_owned(), |q| q.to_string())
            ));
            lines.push(format!("Stall: {}", product.stall_id));
            if !product.categories.is_empty() {
                lines.push(format!("Categories: {}", product.categories.join(", ")));
            }
            if let Some(about) = &product.description {
                lines.push(format!("About: {about}"));
            }
        }
        Proposed::Delete { kind, id } => {
            lines.push(format!(
                "Delete {} {}: buyers no longer see it.",
                listing_word(*kind),
                listing_name(merchants, &proposal.merchant, *kind, id)
            ));
        }
    }
    lines
}

fn listing_name(merchants: &Merchants, merchant: &PublicKey, kind: u16, id: &str) -> String {
    let name = Some(*merchant).and_then(|m| {
        if kind == KIND_STALL {
            merchants.stall(&m, id).ok().flatten().map(|s| s.name)
        } else {
            merchants
                .product(&m, id)
                .ok()
                .flatten()
                .map(|p| p.name)
                .or_else(|| {
                    merchants
                        .hidden_products(&m)
                        .ok()
                        .and_then(|all| all.into_iter().find(|p| p.id == id).map(|p| p.name))
                })
        }
    });
    name.unwrap_or_else(|| id.to_owned())
}

/// `stall` or `product`, for messages.
fn listing_word(kind: u16) -> &'static str {
    if kind == KIND_STALL {
        "stall"
    } else {
        "product"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::desk::tests::{fixture, mango, stall};

    #[tokio::test]
    async fn a_proposal_reads_as_what_it_asks_and_who_asks(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture()?;
        let stall = f
            .desk
            .propose(&f.agent, &f.merchant, Proposed::Stall(stall()))?;
        let pending = f.desk.pending_for(&f.merchant)?;
        assert_eq!(
            summary(&f.desk, &f.merchants, &pending[0]),
            "Stall Mama Duka (sat), Juma"
        );
        f.desk.approve(&f.merchant, stall.proposal).await?;
        f.desk
            .propose(&f.agent, &f.merchant, Proposed::Product(mango()))?;
        let pending = f.desk.pending_for(&f.merchant)?;
        assert_eq!(
            summary(&f.desk, &f.merchants, &pending[0]),
            "Product Mango 500 sat, Juma"
        );
        assert_eq!(
            details(&f.desk, &f.merchants, &pending[0]),
            [
                "From agent Juma",
                "New product: Mango",
                "Price: 500 sat",
                "Stock: 3",
                "Stall: duka",
            ]
        );
        Ok(())
    }
}
