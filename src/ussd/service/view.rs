//! The merchant's data as the menu engine reads it ([`View`]), for one hop.

use super::*;

/// The merchant's data, read for one hop.
pub(super) struct Data<'a> {
    pub(super) inner: &'a Inner,
    pub(super) merchant: PublicKey,
    pub(super) now: u64,
}

impl View for Data<'_> {
    type Error = UssdError;

    fn shop(&self) -> Result<Shop, UssdError> {
        let merchant = self.inner.merchants.get(&self.merchant)?;
        Ok(Shop {
            name: merchant.name,
            pending: merchant.status == MerchantStatus::Pending,
            lightning_address: merchant.lightning_address,
            balance: self.inner.escrow.balance(&self.merchant)?,
            share_buyer: self.inner.desk.links().shares_buyer(&self.merchant)?,
        })
    }

    fn orders(&self) -> Result<Vec<OrderLine>, UssdError> {
        Ok(self
            .inner
            .escrow
            .orders_of(&self.merchant, MAX_LISTED_ORDERS, menu::listed)?
            .into_iter()
            .map(|o| OrderLine {
                number: o.number,
                state: o.state,
                total: o.total,
            })
            .collect())
    }

    fn order(&self, number: u64) -> Result<Option<OrderDetail>, UssdError> {
        let escrow = &self.inner.escrow;
        let Some(record) = escrow.order(&self.merchant, number)? else {
            return Ok(None);
        };
        let hidden = self.inner.merchants.hidden_products(&self.merchant)?;
        let mut items = Vec::new();
        for line in &record.lines {
            let name = match self
                .inner
                .merchants
                .product(&self.merchant, &line.product_id)?
            {
                Some(product) => product.name,
                None => hidden
                    .iter()
                    .find(|p| p.id == line.product_id)
                    .map_or_else(|| line.product_id.clone(), |p| p.name.clone()),
            };
            items.push((name, line.quantity));
        }
        Ok(Some(OrderDetail {
            line: OrderLine {
                number,
                state: record.state,
                total: record.total,
            },
            items,
            shipping: escrow.shipping(&record)?,
            issue: escrow.issue_choice(&record),
        }))
    }

    fn products(&self) -> Result<Vec<ProductLine>, UssdError> {
        let merchants = &self.inner.merchants;
        let listed = merchants
            .products(&self.merchant)?
            .into_iter()
            .map(|p| (p, false));
        let hidden = merchants
            .hidden_products(&self.merchant)?
            .into_iter()
            .map(|p| (p, true));
        Ok(listed
            .chain(hidden)
            .map(|(p, hidden)| ProductLine {
                price: price_text(p.price, &p.currency),
                currency: p.currency.clone(),
                id: p.id,
                name: p.name,
                quantity: p.quantity,
                hidden,
            })
            .collect())
    }

    fn approvals(&self) -> Result<Vec<ApprovalLine>, UssdError> {
        let desk = &self.inner.desk;
        Ok(desk
            .pending_for(&self.merchant)?
            .iter()
            .map(|p| ApprovalLine {
                id: p.id,
                summary: approvals::summary(desk, &self.inner.merchants, p),
            })
            .collect())
    }

    fn approval(&self, id: u64) -> Result<Option<Vec<String>>, UssdError> {
        let desk = &self.inner.desk;
        Ok(desk
            .pending(&self.merchant, id)?
            .map(|p| approvals::details(desk, &self.inner.merchants, &p)))
    }

    fn agents(&self) -> Result<Vec<AgentLine>, UssdError> {
        Ok(self
            .inner
            .desk
            .agents_of(&self.merchant)?
            .into_iter()
            .map(|(agent, label)| AgentLine {
                agent: agent.to_hex(),
                label,
            })
            .collect())
    }

    fn now(&self) -> u64 {
        self.now
    }

    fn bill_options(&self) -> Result<Vec<BillOption>, UssdError> {
        let providers = self.inner.exchange.providers().all().map_err(|e| {
            UssdError::Exchange(crate::exchange::ExchangeError::Internal(e.to_string()))
        })?;
        let mut options = Vec::new();
        for p in providers {
            for kind in &p.kinds {
                for currency in &p.currencies {
                    options.push(BillOption {
                        choice: BillChoice {
                            provider: p.id.clone(),
                            kind: kind.as_str().to_owned(),
                            currency: currency.clone(),
                        },
                        label: format!("{} {} {currency}", p.name, kind.as_str().replace('_', " ")),
                    });
                }
            }
        }
        Ok(options)
    }

    fn bill_quote(
        &self,
        choice: &BillChoice,
        reference: &str,
        amount: &str,
    ) -> Result<Result<BillQuote, String>, UssdError> {
        let args = bills::offer_args(choice, reference, amount);
        Ok(match self.inner.quote_bill(&args)? {
            Err(why) => Err(why),
            Ok(a) => Ok(BillQuote {
                escrow: a.escrow,
                bond: a.maker_bond,
                fee: a.platform_fee,
                total: a.maker_invoice(),
                balance: self.inner.escrow.balance(&self.merchant)?,
            }),
        })
    }

    fn bills(&self) -> Result<Vec<BillLine>, UssdError> {
        self.inner
            .bill_records(&self.merchant)?
            .iter()
            .map(|b| Ok(self.inner.bill_detail(b)?.line))
            .collect()
    }

    fn bill(&self, id: &str) -> Result<Option<BillDetail>, UssdError> {
        self.inner
            .bill_record(&self.merchant, id)?
            .map(|b| self.inner.bill_detail(&b))
            .transpose()
    }
}
