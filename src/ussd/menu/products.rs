//! Menu 3: the products, one product, and its price, stock and visibility.

use super::*;

/// What `input` does on one of these screens.
pub(super) fn step<V: View>(menu: &Menu, input: &str, view: &V) -> Result<Step, V::Error> {
    let back = input == "00";
    match menu {
        Menu::Products { page } => {
            if let Some(next) = paging(menu, *page, input, view, Menu::Main)? {
                return Ok(next);
            }
            let products = view.products()?;
            match number(input)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| products.get(i))
            {
                Some(product) => show(Menu::Product {
                    id: product.id.clone(),
                }),
                None => again(menu, "Invalid choice."),
            }
        }
        Menu::Product { id } => {
            if back {
                return show(Menu::Products { page: 0 });
            }
            let Some(product) = product(view, id)? else {
                return Ok(gone());
            };
            match (input, product.hidden) {
                ("1", false) => show(Menu::ProductPrice { id: id.clone() }),
                ("2", false) => show(Menu::ProductStock { id: id.clone() }),
                ("3", false) => Ok(Step::Act(Action::Hide { id: id.clone() })),
                ("3", true) => Ok(Step::Act(Action::Show { id: id.clone() })),
                _ => again(menu, "Invalid choice."),
            }
        }
        Menu::ProductPrice { id } | Menu::ProductStock { id } => {
            if back {
                return show(Menu::Product { id: id.clone() });
            }
            if product(view, id)?.is_none() {
                return Ok(gone());
            }
            match number(input).filter(|n| *n <= MAX_NUMBER) {
                Some(n) if matches!(menu, Menu::ProductPrice { .. }) => {
                    Ok(Step::Act(Action::SetPrice {
                        id: id.clone(),
                        price: n,
                    }))
                }
                Some(n) => Ok(Step::Act(Action::SetStock {
                    id: id.clone(),
                    quantity: n,
                })),
                None => again(menu, "Enter a whole number."),
            }
        }
        // `step` hands over only this family's screens.
        _ => again(menu, "Invalid choice."),
    }
}

/// What one of these screens shows.
pub(super) fn layout<V: View>(menu: &Menu, out: &mut Layout, view: &V) -> Result<(), V::Error> {
    match menu {
        Menu::Products { .. } => {
            let products = view.products()?;
            if products.is_empty() {
                out.head
                    .push("No products yet. Your agent or soko's operator adds them.".to_owned());
            } else {
                out.head.push("Products:".to_owned());
                out.items = products
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let tag = if p.hidden {
                            " hidden".to_owned()
                        } else {
                            stock(p.quantity)
                        };
                        format!("{} {} {}{tag}", i + 1, p.name, p.price)
                    })
                    .collect();
                out.foot = lines(&["Reply with a product no."]);
            }
            out.back = true;
        }
        Menu::Product { id } => {
            out.back = true;
            let Some(p) = product(view, id)? else {
                out.head.push("This product is gone.".to_owned());
                return Ok(());
            };
            out.head.push(p.name.clone());
            out.head.push(format!("Price: {}", p.price));
            out.head.push(format!(
                "Stock: {}{}",
                p.quantity
                    .map_or_else(|| "unlimited".to_owned(), |q| q.to_string()),
                if p.hidden { " (hidden)" } else { "" }
            ));
            out.foot = if p.hidden {
                lines(&["3 Show to buyers"])
            } else {
                lines(&["1 Change price", "2 Change stock", "3 Hide from buyers"])
            };
        }
        Menu::ProductPrice { id } => {
            if let Some(p) = product(view, id)? {
                out.head.push(format!("{}: {}", p.name, p.price));
                out.foot = vec![format!("New price in {}, whole number:", p.currency)];
            }
            out.back = true;
        }
        Menu::ProductStock { id } => {
            if let Some(p) = product(view, id)? {
                out.head
                    .push(format!("{}: stock {}", p.name, stock_count(p.quantity)));
            }
            out.foot = lines(&["New stock, in units:"]);
            out.back = true;
        }
        // `layout` hands over only this family's screens.
        _ => {}
    }
    Ok(())
}
