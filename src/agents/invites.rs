//! Invite codes: created by admins for a role, redeemed by registrations.
//!
//! A code is 16 characters of Crockford base32 in four groups, e.g. `7KQ2-M9XD-4HWA-0RTC`:
//! 80 random bits, short enough to read over the phone and type on any keyboard. Input is
//! forgiving: case, dashes and spaces do not matter, and `O`, `I`, `L` read as `0`, `1`, `1`.
//! Online guessing is hopeless at 2^80; offline guessing needs the vault key, because sled
//! holds only HMAC-SHA256 of the code under a subkey of the vault (a copy of sled alone
//! reveals nothing). The code itself is shown once, to the admin who created it.

use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::secp256k1::rand::{rngs::OsRng, Rng};
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use crate::proto::agents::Role;
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;

/// Characters in a code (without dashes).
pub const CODE_CHARS: usize = 16;
/// Characters per dash-separated group.
pub const GROUP_CHARS: usize = 4;
/// Most registrations one code may allow.
pub const MAX_USES: u32 = 1000;
/// Longest validity of a code: one year.
pub const MAX_EXPIRY_SECS: u64 = 365 * 24 * 3600;
/// Crockford's base32 alphabet: no I, L, O, U, so nothing is mistaken for a digit.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Vault purpose of the HMAC key.
const VAULT_PURPOSE: &str = "invite-code";

/// An invite code in its canonical form. `Debug` hides it so it cannot leak into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(String);

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteCode(****)")
    }
}

impl InviteCode {
    /// A uniformly random code.
    pub fn generate() -> Self {
        let mut rng = OsRng;
        Self(
            (0..CODE_CHARS)
                .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                .collect(),
        )
    }

    /// Reads what someone typed; `None` when it cannot be a code.
    pub fn parse(input: &str) -> Option<Self> {
        let mut canonical = String::with_capacity(CODE_CHARS);
        for c in input.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || canonical.len() == CODE_CHARS {
                return None;
            }
            canonical.push(c);
        }
        (canonical.len() == CODE_CHARS).then_some(Self(canonical))
    }

    /// The code in groups, for the admin who created it only.
    pub fn reveal(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        chars
            .chunks(GROUP_CHARS)
            .map(|group| group.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// An invite as stored (under the HMAC of its code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The role it grants.
    pub role: Role,
    /// Registrations it allowed when created.
    pub uses: u32,
    /// Registrations it still allows.
    pub uses_left: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds from which it no longer works, if ever.
    pub expires_at: Option<u64>,
    /// The admin who created it (stored as hex).
    pub created_by: PublicKey,
}

/// Why an invite cannot be created; the message is for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteSpecRefusal {
    /// Admins are configured, not invited.
    #[error("admins are not invited: they are listed in soko's config ([admins] npubs)")]
    Admin,
    /// Merchants are onboarded by phone.
    #[error("merchants are onboarded by phone (USSD), not with invite codes")]
    Merchant,
    /// Not a role an invite is for (as the admin wrote it).
    #[error("{0:?} is not a role invites are for; use \"agent\" or \"trader\"")]
    NotInvited(String),
    /// A number of uses out of range.
    #[error("uses must be 1 to {MAX_USES}, not {0}")]
    Uses(u32),
    /// An expiry out of range.
    #[error("expires_in_secs must be 1 to {MAX_EXPIRY_SECS} (one year), not {0}")]
    Expiry(u64),
}

/// Why an invite was not created.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// The admin asked for something invites cannot be.
    #[error(transparent)]
    Refused(#[from] InviteSpecRefusal),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a code does not admit a registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteRefusal {
    /// No invite has this code (or the text is not a code at all).
    #[error("no invite has this code")]
    Unknown,
    /// Every use is taken.
    #[error("this invite code has been used")]
    Used,
    /// Past its expiry.
    #[error("this invite code has expired")]
    Expired,
    /// The code is for another role.
    #[error("this invite code is for the {invite} role, not {asked}")]
    WrongRole {
        /// What the invite grants.
        invite: Role,
        /// What the registration asked for.
        asked: Role,
    },
}

/// The invite an admin asks for, checked. Only agents and traders are invited: admins are
/// listed in the config, and merchants are onboarded by phone.
pub fn new_invite(
    role: &str,
    uses: Option<u32>,
    expires_in_secs: Option<u64>,
    created_by: &PublicKey,
    now: u64,
) -> Result<Invite, InviteSpecRefusal> {
    let role = match Role::parse(role) {
        Some(role @ (Role::Agent | Role::Trader)) => role,
        Some(Role::Admin) => return Err(InviteSpecRefusal::Admin),
        Some(Role::Merchant) => return Err(InviteSpecRefusal::Merchant),
        Some(Role::Anonymous) | None => return Err(InviteSpecRefusal::NotInvited(role.to_owned())),
    };
    let uses = uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(InviteSpecRefusal::Uses(uses));
    }
    let expires_at = match expires_in_secs {
        None => None,
        Some(secs) if secs == 0 || secs > MAX_EXPIRY_SECS => {
            return Err(InviteSpecRefusal::Expiry(secs))
        }
        Some(secs) => Some(now.saturating_add(secs)),
    };
    Ok(Invite {
        role,
        uses,
        uses_left: uses,
        created_at: now,
        expires_at,
        created_by: *created_by,
    })
}

/// Takes one use of `invite` for a registration as `asked` at `now`: the invite to store
/// back, or why not. Checked in this order so the answer names the first thing to fix.
pub fn redeem(invite: Option<&Invite>, asked: Role, now: u64) -> Result<Invite, InviteRefusal> {
    let invite = invite.ok_or(InviteRefusal::Unknown)?;
    if invite.uses_left == 0 {
        return Err(InviteRefusal::Used);
    }
    if invite.expires_at.is_some_and(|at| now >= at) {
        return Err(InviteRefusal::Expired);
    }
    if invite.role != asked {
        return Err(InviteRefusal::WrongRole {
            invite: invite.role,
            asked,
        });
    }
    let mut next = invite.clone();
    next.uses_left -= 1;
    Ok(next)
}

/// The invites tree: HMAC of the code (32 bytes) → [`Invite`].
#[derive(Clone)]
pub struct Invites {
    tree: Typed<Invite>,
    key: [u8; 32],
}

impl std::fmt::Debug for Invites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invites(..)")
    }
}

impl Invites {
    /// Opens the tree; codes are hashed under a key derived from `vault`.
    pub fn open(store: &Store, vault: &Vault) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("invites")?,
            key: vault.subkey(VAULT_PURPOSE),
        })
    }

    /// Creates an invite and returns its code (shown once; only its HMAC is kept).
    pub fn create(
        &self,
        role: &str,
        uses: Option<u32>,
        expires_in_secs: Option<u64>,
        created_by: &PublicKey,
        now: u64,
    ) -> Result<(InviteCode, Invite), InviteError> {
        let invite = new_invite(role, uses, expires_in_secs, created_by, now)?;
        loop {
            let code = InviteCode::generate();
            // A collision at 80 bits will not happen, but it must not overwrite an invite.
            if self.tree.insert_if_absent(&self.key_of(&code), &invite)? {
                return Ok((code, invite));
            }
        }
    }

    /// The invite with this code, if any.
    pub fn get(&self, code: &InviteCode) -> Result<Option<Invite>, StoreError> {
        self.tree.get(&self.key_of(code))
    }

    /// The tree key of a code.
    pub fn key_of(&self, code: &InviteCode) -> [u8; 32] {
        let mut engine = HmacEngine::<sha256::Hash>::new(&self.key);
        engine.input(code.0.as_bytes());
        Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
    }

    /// The tree, for transactions with other trees.
    pub(crate) fn tree(&self) -> &Typed<Invite> {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Keys;

    use super::*;

    fn admin() -> PublicKey {
        Keys::generate().public_key()
    }

    #[test]
    fn an_invite_keeps_its_creator_as_the_hex_an_older_soko_wrote() {
        let stored = invite(1, None);
        let json = serde_json::to_value(&stored).unwrap_or_default();
        assert_eq!(
            json["created_by"],
            serde_json::json!(stored.created_by.to_hex())
        );
        assert_eq!(serde_json::from_value::<Invite>(json).ok(), Some(stored));
    }

    fn invite(uses_left: u32, expires_at: Option<u64>) -> Invite {
        Invite {
            role: Role::Agent,
            uses: 2,
            uses_left,
            created_at: 100,
            expires_at,
            created_by: admin(),
        }
    }

    #[test]
    fn codes_are_typeable_and_forgiving() {
        let code = InviteCode::generate();
        let shown = code.reveal();
        assert_eq!(shown.len(), CODE_CHARS + CODE_CHARS / GROUP_CHARS - 1);
        assert_eq!(shown.matches('-').count(), 3);
        assert_eq!(InviteCode::parse(&shown), Some(code.clone()));
        assert_eq!(InviteCode::parse(&shown.to_lowercase()), Some(code.clone()));
        assert_eq!(InviteCode::parse(&shown.replace('-', " ")), Some(code));
        assert_eq!(
            InviteCode::parse("oil0-1111-2222-3333"),
            InviteCode::parse("0110-1111-2222-3333")
        );
        for bad in [
            "",
            "7KQ2-M9XD-4HWA",
            "7KQ2-M9XD-4HWA-0RTCX",
            "7KQ2-M9XD-4HWA-0RTU",
            "7KQ2-M9XD-4HWA-0RT€",
        ] {
            assert_eq!(InviteCode::parse(bad), None, "{bad}");
        }
        let secret = InviteCode::generate();
        assert!(!format!("{secret:?}").contains(&secret.0));
        assert_ne!(InviteCode::generate(), InviteCode::generate());
    }

    #[test]
    fn only_agent_invites_with_sane_limits_are_created() {
        let by = admin();
        let made = new_invite("agent", None, Some(60), &by, 1000);
        assert_eq!(
            made.map(|i| (i.role, i.uses, i.uses_left, i.expires_at)),
            Ok((Role::Agent, 1, 1, Some(1060)))
        );
        assert_eq!(
            new_invite("agent", Some(5), None, &by, 0).map(|i| (i.uses_left, i.expires_at)),
            Ok((5, None))
        );
        for (role, uses, expiry, refusal) in [
            ("admin", None, None, InviteSpecRefusal::Admin),
            ("merchant", None, None, InviteSpecRefusal::Merchant),
            (
                "anonymous",
                None,
                None,
                InviteSpecRefusal::NotInvited("anonymous".into()),
            ),
            (
                "Agent",
                None,
                None,
                InviteSpecRefusal::NotInvited("Agent".into()),
            ),
            ("agent", Some(0), None, InviteSpecRefusal::Uses(0)),
            (
                "agent",
                Some(MAX_USES + 1),
                None,
                InviteSpecRefusal::Uses(MAX_USES + 1),
            ),
            ("agent", None, Some(0), InviteSpecRefusal::Expiry(0)),
            (
                "agent",
                None,
                Some(MAX_EXPIRY_SECS + 1),
                InviteSpecRefusal::Expiry(MAX_EXPIRY_SECS + 1),
            ),
        ] {
            assert_eq!(
                new_invite(role, uses, expiry, &by, 0).err(),
                Some(refusal),
                "{role} {uses:?} {expiry:?}"
            );
        }
        let merchant = new_invite("merchant", None, None, &by, 0);
        assert!(merchant.is_err_and(|e| e.to_string().contains("USSD")));
    }

    #[test]
    fn redeeming_takes_one_use_and_refuses_in_order() {
        let taken = redeem(Some(&invite(2, None)), Role::Agent, 500);
        assert_eq!(taken.map(|i| i.uses_left), Ok(1));
        assert_eq!(
            redeem(Some(&invite(1, Some(200))), Role::Agent, 199).map(|i| i.uses_left),
            Ok(0)
        );
        let cases = [
            (None, Role::Agent, 0, InviteRefusal::Unknown),
            (Some(invite(0, None)), Role::Agent, 0, InviteRefusal::Used),
            // Used beats expired: the first thing to fix.
            (
                Some(invite(0, Some(1))),
                Role::Agent,
                5,
                InviteRefusal::Used,
            ),
            (
                Some(invite(1, Some(200))),
                Role::Agent,
                200,
                InviteRefusal::Expired,
            ),
            (
                Some(invite(1, None)),
                Role::Merchant,
                0,
                InviteRefusal::WrongRole {
                    invite: Role::Agent,
                    asked: Role::Merchant,
                },
            ),
        ];
        for (stored, asked, now, refusal) in cases {
            assert_eq!(redeem(stored.as_ref(), asked, now), Err(refusal));
        }
    }

    #[test]
    fn the_last_use_is_taken_once() {
        let once = redeem(Some(&invite(1, None)), Role::Agent, 0);
        let again = once.as_ref().map(|i| redeem(Some(i), Role::Agent, 0));
        assert_eq!(again, Ok(Err(InviteRefusal::Used)));
    }

    #[test]
    fn codes_are_stored_only_as_hmac() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let vault = Vault::from_root([7; 32])?;
        let invites = Invites::open(&store, &vault)?;
        let (code, invite) = invites.create("agent", Some(3), None, &admin(), 10)?;
        assert_eq!(invites.get(&code)?, Some(invite));
        let other = Invites::open(&store, &Vault::from_root([8; 32])?)?;
        assert_eq!(other.get(&code)?, None, "another vault key finds nothing");
        for entry in store.db().open_tree("invites")?.iter() {
            let (key, value) = entry?;
            let plain = code.0.as_bytes();
            assert!(!key.windows(plain.len()).any(|w| w == plain));
            assert!(!value.windows(plain.len()).any(|w| w == plain));
        }
        Ok(())
    }
}
