//! What an offer costs each side and where every sat goes when it ends
//! (`kinds/exchange-amounts.md`). Pure integer arithmetic: sats and basis points, no floats,
//! every sum checked.
//!
//! Both sides' money sits in their own session wallets until the offer ends; [`settle`] says,
//! for each outcome, which wallet pays what to whom. The legs out of a wallet always add up to
//! exactly what was paid into it, so nothing is stranded and nothing is paid twice: that is
//! what the property tests at the bottom hold it to.

use serde::{Deserialize, Serialize};

use crate::money::{Overflow, Sats};

/// Basis points in one whole: 10 000 bp = 100 %.
pub const BP_PER_WHOLE: u32 = 10_000;

/// A charge of `flat + bp/10 000 × sats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    /// The fixed part.
    pub flat: Sats,
    /// The proportional part, in basis points (1 bp = 0.01 %).
    pub bp: u32,
}

impl Fee {
    /// The charge on `sats`. The proportional part is rounded up to the next whole sat, so
    /// soko never holds less bond or takes less fee than the published rate.
    pub fn of(&self, sats: Sats) -> Result<Sats, Overflow> {
        // u64 × u32 always fits in u128; only the final sum can leave u64.
        let scaled = u128::from(sats.0) * u128::from(self.bp);
        let proportional = scaled.div_ceil(u128::from(BP_PER_WHOLE));
        let proportional = u64::try_from(proportional).map_err(|_| Overflow)?;
        self.flat.checked_add(Sats(proportional))
    }
}

/// The bonds and fees of an offer, each a [`Fee`] on the escrowed sats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The maker's bond.
    pub maker_bond: Fee,
    /// The taker's bond.
    pub taker_bond: Fee,
    /// soko's fee, paid by the maker.
    pub platform_fee: Fee,
    /// soko's fee, paid by the taker.
    pub taker_fee: Fee,
}

impl Default for Schedule {
    /// OpenPleb's published defaults: each bond 5 % + 1000 sat, the platform fee 1 % + 100 sat
    /// (the maker pays it), the taker fee 0 % + 50 sat.
    fn default() -> Self {
        let bond = Fee {
            flat: Sats(1_000),
            bp: 500,
        };
        Schedule {
            maker_bond: bond,
            taker_bond: bond,
            platform_fee: Fee {
                flat: Sats(100),
                bp: 100,
            },
            taker_fee: Fee {
                flat: Sats(50),
                bp: 0,
            },
        }
    }
}

/// Every amount of one offer, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    /// The sats the maker offers for the bill paid.
    pub escrow: Sats,
    /// The maker's bond.
    pub maker_bond: Sats,
    /// The taker's bond.
    pub taker_bond: Sats,
    /// soko's fee from the maker.
    pub platform_fee: Sats,
    /// soko's fee from the taker.
    pub taker_fee: Sats,
}

impl Amounts {
    /// The amounts for `escrow` sats under `schedule`. Refused when any amount, or either
    /// side's invoice total, does not fit in 64 bits, so the totals below cannot overflow.
    pub fn for_escrow(schedule: &Schedule, escrow: Sats) -> Result<Amounts, Overflow> {
        let amounts = Amounts {
            escrow,
            maker_bond: schedule.maker_bond.of(escrow)?,
            taker_bond: schedule.taker_bond.of(escrow)?,
            platform_fee: schedule.platform_fee.of(escrow)?,
            taker_fee: schedule.taker_fee.of(escrow)?,
        };
        amounts.checked_maker_invoice()?;
        amounts.checked_taker_invoice()?;
        Ok(amounts)
    }

    /// The maker's one invoice: escrow + maker bond + platform fee. Amounts made by
    /// [`Amounts::for_escrow`] always fit; a hand-built value that does not saturates.
    pub fn maker_invoice(&self) -> Sats {
        self.checked_maker_invoice().unwrap_or(Sats(u64::MAX))
    }

    /// The taker's invoice: taker bond + taker fee. Saturates like [`Amounts::maker_invoice`].
    pub fn taker_invoice(&self) -> Sats {
        self.checked_taker_invoice().unwrap_or(Sats(u64::MAX))
    }

    fn checked_maker_invoice(&self) -> Result<Sats, Overflow> {
        self.escrow
            .checked_add(self.maker_bond)?
            .checked_add(self.platform_fee)
    }

    fn checked_taker_invoice(&self) -> Result<Sats, Overflow> {
        self.taker_bond.checked_add(self.taker_fee)
    }
}

/// Whose session wallet a leg is paid out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The maker's wallet: escrow, maker bond, platform fee.
    Maker,
    /// The taker's wallet: taker bond, taker fee.
    Taker,
}

/// Who a leg is paid to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The maker.
    Maker,
    /// The taker.
    Taker,
    /// soko's fee account.
    Soko,
}

/// Which of the offer's amounts a leg is (part of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The escrowed sats (a split pays it in two legs).
    Escrow,
    /// The maker's bond.
    MakerBond,
    /// The taker's bond.
    TakerBond,
    /// soko's fee from the maker.
    PlatformFee,
    /// soko's fee from the taker.
    TakerFee,
}

/// One payment when an offer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    /// The wallet it comes out of.
    pub from: Side,
    /// Who receives it.
    pub to: Party,
    /// How much (never zero).
    pub amount: Sats,
    /// What it is.
    pub what: Part,
}

/// How an offer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The maker confirmed the receipt, or let its window pass.
    Completed,
    /// Listed, never claimed, and the maker cancelled: a full refund, no fee.
    Cancelled,
    /// Dispute: the taker did not pay the bill.
    MakerWins,
    /// Dispute: the bill was paid and the maker would not confirm.
    TakerWins,
    /// Dispute: the escrow is shared.
    Split,
    /// An admin undoes the trade: everyone gets back what it paid, no fee.
    Return,
}

/// Where every sat of an ended offer goes, maker's wallet first, in the order of the table
/// in `kinds/exchange-amounts.md`. `taker_paid`: the taker's bond and fee invoice was paid
/// (its wallet holds them); when false nothing comes out of the taker's wallet.
///
/// Legs of zero sats are left out. `(from, what, to)` is unique within the result, so a
/// ledger can key each payment by it and a retry finds the same key.
pub fn settle(amounts: &Amounts, outcome: Outcome, taker_paid: bool) -> Vec<Leg> {
    use Party::{Maker, Soko, Taker};
    let a = amounts;
    let maker: Vec<(Party, Sats, Part)> = match outcome {
        Outcome::Completed => vec![
            (Taker, a.escrow, Part::Escrow),
            (Maker, a.maker_bond, Part::MakerBond),
            (Soko, a.platform_fee, Part::PlatformFee),
        ],
        Outcome::Cancelled | Outcome::Return => vec![
            (Maker, a.escrow, Part::Escrow),
            (Maker, a.maker_bond, Part::MakerBond),
            (Maker, a.platform_fee, Part::PlatformFee),
        ],
        Outcome::MakerWins => vec![
            (Maker, a.escrow, Part::Escrow),
            (Maker, a.maker_bond, Part::MakerBond),
            (Soko, a.platform_fee, Part::PlatformFee),
        ],
        Outcome::TakerWins => vec![
            (Taker, a.escrow, Part::Escrow),
            (Taker, a.maker_bond, Part::MakerBond),
            (Soko, a.platform_fee, Part::PlatformFee),
        ],
        Outcome::Split => {
            let to_maker = Sats(a.escrow.0 / 2);
            let to_taker = Sats(a.escrow.0 - to_maker.0);
            vec![
                (Maker, to_maker, Part::Escrow),
                (Taker, to_taker, Part::Escrow),
                (Maker, a.maker_bond, Part::MakerBond),
                (Soko, a.platform_fee, Part::PlatformFee),
            ]
        }
    };
    let taker: Vec<(Party, Sats, Part)> = if !taker_paid {
        Vec::new()
    } else {
        match outcome {
            Outcome::Completed | Outcome::TakerWins | Outcome::Split => vec![
                (Taker, a.taker_bond, Part::TakerBond),
                (Soko, a.taker_fee, Part::TakerFee),
            ],
            Outcome::MakerWins => vec![
                (Maker, a.taker_bond, Part::TakerBond),
                (Soko, a.taker_fee, Part::TakerFee),
            ],
            // A cancelled offer has no taker; should one have paid anyway, it gets its
            // money back rather than leave it stranded in its wallet.
            Outcome::Cancelled | Outcome::Return => vec![
                (Taker, a.taker_bond, Part::TakerBond),
                (Taker, a.taker_fee, Part::TakerFee),
            ],
        }
    };
    let legs = |from: Side, list: Vec<(Party, Sats, Part)>| {
        list.into_iter()
            .filter(|(_, amount, _)| *amount != Sats::ZERO)
            .map(move |(to, amount, what)| Leg {
                from,
                to,
                amount,
                what,
            })
    };
    legs(Side::Maker, maker)
        .chain(legs(Side::Taker, taker))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leg(from: Side, what: Part, to: Party, amount: u64) -> Leg {
        Leg {
            from,
            to,
            amount: Sats(amount),
            what,
        }
    }

    /// The worked example of `kinds/exchange-amounts.md`: 100 000 sat under the defaults.
    fn example() -> Amounts {
        Amounts::for_escrow(&Schedule::default(), Sats(100_000)).unwrap()
    }

    #[test]
    fn the_defaults_give_the_worked_example() {
        let a = example();
        assert_eq!(
            a,
            Amounts {
                escrow: Sats(100_000),
                maker_bond: Sats(6_000),
                taker_bond: Sats(6_000),
                platform_fee: Sats(1_100),
                taker_fee: Sats(50),
            }
        );
        assert_eq!(a.maker_invoice(), Sats(107_100));
        assert_eq!(a.taker_invoice(), Sats(6_050));
    }

    use Part::*;
    use Side::{Maker as M, Taker as T};

    #[test]
    fn completed() {
        assert_eq!(
            settle(&example(), Outcome::Completed, true),
            vec![
                leg(M, Escrow, Party::Taker, 100_000),
                leg(M, MakerBond, Party::Maker, 6_000),
                leg(M, PlatformFee, Party::Soko, 1_100),
                leg(T, TakerBond, Party::Taker, 6_000),
                leg(T, TakerFee, Party::Soko, 50),
            ]
        );
    }

    #[test]
    fn cancelled() {
        assert_eq!(
            settle(&example(), Outcome::Cancelled, false),
            vec![
                leg(M, Escrow, Party::Maker, 100_000),
                leg(M, MakerBond, Party::Maker, 6_000),
                leg(M, PlatformFee, Party::Maker, 1_100),
            ]
        );
        // A taker who somehow paid is refunded, not stranded and not charged.
        assert_eq!(
            settle(&example(), Outcome::Cancelled, true)[3..],
            [
                leg(T, TakerBond, Party::Taker, 6_000),
                leg(T, TakerFee, Party::Taker, 50),
            ]
        );
    }

    #[test]
    fn maker_wins() {
        assert_eq!(
            settle(&example(), Outcome::MakerWins, true),
            vec![
                leg(M, Escrow, Party::Maker, 100_000),
                leg(M, MakerBond, Party::Maker, 6_000),
                leg(M, PlatformFee, Party::Soko, 1_100),
                leg(T, TakerBond, Party::Maker, 6_000),
                leg(T, TakerFee, Party::Soko, 50),
            ]
        );
    }

    #[test]
    fn taker_wins() {
        assert_eq!(
            settle(&example(), Outcome::TakerWins, true),
            vec![
                leg(M, Escrow, Party::Taker, 100_000),
                leg(M, MakerBond, Party::Taker, 6_000),
                leg(M, PlatformFee, Party::Soko, 1_100),
                leg(T, TakerBond, Party::Taker, 6_000),
                leg(T, TakerFee, Party::Soko, 50),
            ]
        );
    }

    #[test]
    fn split() {
        assert_eq!(
            settle(&example(), Outcome::Split, true),
            vec![
                leg(M, Escrow, Party::Maker, 50_000),
                leg(M, Escrow, Party::Taker, 50_000),
                leg(M, MakerBond, Party::Maker, 6_000),
                leg(M, PlatformFee, Party::Soko, 1_100),
                leg(T, TakerBond, Party::Taker, 6_000),
                leg(T, TakerFee, Party::Soko, 50),
            ]
        );
        // An odd sat goes to the taker: the maker gets floor(escrow / 2).
        let odd = Amounts::for_escrow(&Schedule::default(), Sats(100_001)).unwrap();
        let legs = settle(&odd, Outcome::Split, true);
        assert_eq!(legs[0], leg(M, Escrow, Party::Maker, 50_000));
        assert_eq!(legs[1], leg(M, Escrow, Party::Taker, 50_001));
    }

    #[test]
    fn return_undoes_everything() {
        assert_eq!(
            settle(&example(), Outcome::Return, true),
            vec![
                leg(M, Escrow, Party::Maker, 100_000),
                leg(M, MakerBond, Party::Maker, 6_000),
                leg(M, PlatformFee, Party::Maker, 1_100),
                leg(T, TakerBond, Party::Taker, 6_000),
                leg(T, TakerFee, Party::Taker, 50),
            ]
        );
    }

    #[test]
    fn an_unpaid_taker_has_no_legs() {
        for outcome in ALL {
            let legs = settle(&example(), outcome, false);
            assert!(legs.iter().all(|l| l.from == Side::Maker), "{outcome:?}");
            assert_eq!(legs.len(), if outcome == Outcome::Split { 4 } else { 3 });
        }
    }

    #[test]
    fn rounding_goes_up_to_the_next_sat() {
        let fee = |flat, bp| Fee {
            flat: Sats(flat),
            bp,
        };
        // 1 sat at 5 %: 0.05 sat rounds up to 1.
        assert_eq!(fee(1_000, 500).of(Sats(1)), Ok(Sats(1_001)));
        assert_eq!(fee(0, 1).of(Sats(1)), Ok(Sats(1)));
        // Exact multiples do not round.
        assert_eq!(fee(0, 1).of(Sats(10_000)), Ok(Sats(1)));
        assert_eq!(fee(0, 1).of(Sats(10_001)), Ok(Sats(2)));
        // bp = 0 is the flat part alone, whatever the amount.
        assert_eq!(fee(50, 0).of(Sats(u64::MAX)), Ok(Sats(50)));
        assert_eq!(fee(0, 0).of(Sats(0)), Ok(Sats(0)));
        // bp = 10 000 is 100 %.
        assert_eq!(fee(0, 10_000).of(Sats(12_345)), Ok(Sats(12_345)));
        assert_eq!(fee(0, 10_000).of(Sats(u64::MAX)), Ok(Sats(u64::MAX)));
        assert_eq!(fee(1, 10_000).of(Sats(u64::MAX)), Err(Overflow));
        // Nothing on nothing but the flat part.
        assert_eq!(fee(100, 100).of(Sats(0)), Ok(Sats(100)));
        // The 1-sat offer under the defaults.
        let one = Amounts::for_escrow(&Schedule::default(), Sats(1)).unwrap();
        assert_eq!(
            (one.maker_bond, one.platform_fee, one.taker_fee),
            (Sats(1_001), Sats(101), Sats(50))
        );
        let legs = settle(&one, Outcome::Split, true);
        // floor(1 / 2) = 0 to the maker: that leg is left out.
        assert_eq!(legs[0], leg(M, Escrow, Party::Taker, 1));
    }

    #[test]
    fn overflow_is_reported() {
        let big = Schedule {
            maker_bond: Fee {
                flat: Sats(0),
                bp: 10_000,
            },
            ..Schedule::default()
        };
        // The bond alone fits but the maker's invoice (escrow + bond) does not.
        assert_eq!(
            Amounts::for_escrow(&big, Sats(u64::MAX / 2 + 1)),
            Err(Overflow)
        );
        assert!(Amounts::for_escrow(&big, Sats(u64::MAX / 4)).is_ok());
        let huge_bp = Fee {
            flat: Sats(0),
            bp: u32::MAX,
        };
        assert_eq!(huge_bp.of(Sats(u64::MAX)), Err(Overflow));
    }

    #[test]
    fn a_schedule_reads_from_toml_and_refuses_unknown_keys() {
        let schedule: Schedule = toml::from_str(
            "maker_bond = { flat = 1000, bp = 500 }\n\
             taker_bond = { flat = 1000, bp = 500 }\n\
             platform_fee = { flat = 100, bp = 100 }\n\
             taker_fee = { flat = 50, bp = 0 }\n",
        )
        .unwrap();
        assert_eq!(schedule, Schedule::default());
        assert!(toml::from_str::<Fee>("flat = 1\nbp = 2\npct = 3\n").is_err());
    }

    const ALL: [Outcome; 6] = [
        Outcome::Completed,
        Outcome::Cancelled,
        Outcome::MakerWins,
        Outcome::TakerWins,
        Outcome::Split,
        Outcome::Return,
    ];

    fn any_fee() -> impl Strategy<Value = Fee> {
        // Mostly realistic rates, sometimes anything at all, to reach the overflow edges.
        let flat = prop_oneof![0..100_000u64, any::<u64>()];
        let bp = prop_oneof![0..=20_000u32, any::<u32>()];
        (flat, bp).prop_map(|(flat, bp)| Fee {
            flat: Sats(flat),
            bp,
        })
    }

    fn any_schedule() -> impl Strategy<Value = Schedule> {
        (any_fee(), any_fee(), any_fee(), any_fee()).prop_map(|(a, b, c, d)| Schedule {
            maker_bond: a,
            taker_bond: b,
            platform_fee: c,
            taker_fee: d,
        })
    }

    fn any_escrow() -> impl Strategy<Value = Sats> {
        prop_oneof![0..10_000_000u64, any::<u64>()].prop_map(Sats)
    }

    fn total(legs: &[Leg], side: Side) -> u128 {
        legs.iter()
            .filter(|l| l.from == side)
            .map(|l| u128::from(l.amount.0))
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Every sat in comes out once: per wallet, legs sum to what was paid in; no leg is
        /// zero; keys are unique; and an amount that does not fit is an error, never a panic.
        #[test]
        fn conservation(schedule in any_schedule(), escrow in any_escrow(), taker_paid in any::<bool>()) {
            let Ok(amounts) = Amounts::for_escrow(&schedule, escrow) else {
                // Refused only when something really does not fit in u64 (exact in u128).
                let exact = |fee: Fee| {
                    u128::from(fee.flat.0)
                        + (u128::from(escrow.0) * u128::from(fee.bp)).div_ceil(10_000)
                };
                let maker = u128::from(escrow.0) + exact(schedule.maker_bond) + exact(schedule.platform_fee);
                let taker = exact(schedule.taker_bond) + exact(schedule.taker_fee);
                prop_assert!(maker > u128::from(u64::MAX) || taker > u128::from(u64::MAX));
                return Ok(());
            };
            for outcome in ALL {
                let legs = settle(&amounts, outcome, taker_paid);
                prop_assert_eq!(total(&legs, Side::Maker), u128::from(amounts.maker_invoice().0));
                let taker_in = if taker_paid { u128::from(amounts.taker_invoice().0) } else { 0 };
                prop_assert_eq!(total(&legs, Side::Taker), taker_in);
                prop_assert!(legs.iter().all(|l| l.amount != Sats::ZERO));
                let keys: std::collections::HashSet<_> =
                    legs.iter().map(|l| (l.from, l.what, l.to)).collect();
                prop_assert_eq!(keys.len(), legs.len());
                // No fee is taken on a cancellation or a return.
                if matches!(outcome, Outcome::Cancelled | Outcome::Return) {
                    prop_assert!(legs.iter().all(|l| l.to != Party::Soko));
                }
            }
        }

        /// The rounded-up proportional part is the least whole sat not below the exact one.
        #[test]
        fn rounding_is_the_ceiling(sats in any::<u64>(), bp in 0..=20_000u32) {
            let fee = Fee { flat: Sats(0), bp };
            if let Ok(charged) = fee.of(Sats(sats)) {
                let exact = u128::from(sats) * u128::from(bp);
                let charged = u128::from(charged.0) * 10_000;
                prop_assert!(charged >= exact);
                prop_assert!(charged < exact + 10_000);
            }
        }
    }
}
