//! Registration: a user presents, once, a Nostr event signed by its own key (a Schnorr-signed
//! registration message) carrying an invite code. `kinds/agents.md` specifies the event.
//!
//! The checks run in a fixed order, each with its own refusal, cheapest and least
//! stateful first: nothing is written for an event that does not verify, is not from the
//! sender, is not for this soko or is outside the time window. Only then is its nonce (the
//! event id) recorded, so a replay of a well-formed event is refused even when the first
//! presentation was refused for its invite. The invite's use and the user record are written
//! in one transaction, so two registrations cannot both take an invite's last use, and a
//! refused registration takes none.

use nostr_sdk::{Event, PublicKey, TagKind};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::invites::{redeem, InviteCode, InviteRefusal, Invites};
use super::users::{UserRecord, Users};
use crate::proto::agents::{Role, REGISTRATION_KIND};
use crate::store::{Store, StoreError, Typed};

/// How far `created_at` may be from soko's clock, either way.
pub const WINDOW_SECS: u64 = 60;
/// Longest name a user may give.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a registration is refused. Each has its own stable error code (`kinds/agents.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationRefusal {
    /// The event's id or signature does not verify.
    #[error("the registration event's id or signature does not verify")]
    BadSignature,
    /// Signed by another key than the DM's sender.
    #[error("the registration event is signed by {signer}, not by the sender of this message")]
    SignerMismatch {
        /// The event's pubkey (hex).
        signer: String,
    },
    /// Not addressed to this soko.
    #[error("the registration event must have exactly one `p` tag: this soko's bot pubkey {soko}")]
    WrongRecipient {
        /// soko's bot pubkey (hex).
        soko: String,
    },
    /// Not the registration kind.
    #[error("a registration event is kind {REGISTRATION_KIND}, not {0}")]
    WrongKind(u16),
    /// Outside the time window.
    #[error(
        "the registration event's created_at ({created_at}) is {} s {} soko's clock ({now}); \
         it must be within {WINDOW_SECS} s: sign a fresh one (and check your clock)",
        created_at.abs_diff(*now),
        if created_at > now { "ahead of" } else { "behind" }
    )]
    Stale {
        /// The event's `created_at`.
        created_at: u64,
        /// soko's clock.
        now: u64,
    },
    /// The event (its id, the nonce) was presented before.
    #[error("this registration event was already presented; sign a new one")]
    Replayed,
    /// Its tags are not what a registration carries.
    #[error("{0}")]
    Malformed(String),
    /// The invite does not admit it.
    #[error(transparent)]
    Invite(InviteRefusal),
    /// The sender already has a role.
    #[error("you are already registered (role {0})")]
    AlreadyRegistered(Role),
}

/// A registration's outcome, apart from refusals.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Refused, with the reason to send back.
    #[error(transparent)]
    Refused(#[from] RegistrationRefusal),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The first checks, on the event alone (no state): signature, signer, recipient, kind, time.
pub fn check_event(
    event: &Event,
    sender: &PublicKey,
    soko: &PublicKey,
    now: u64,
) -> Result<(), RegistrationRefusal> {
    // `verify` checks that the id commits to the content and that the signature is the
    // pubkey's over that id: a tampered copy with the original id fails here.
    if event.verify().is_err() {
        return Err(RegistrationRefusal::BadSignature);
    }
    if event.pubkey != *sender {
        return Err(RegistrationRefusal::SignerMismatch {
            signer: event.pubkey.to_hex(),
        });
    }
    let recipients: Vec<Option<PublicKey>> = event
        .tags
        .filter(TagKind::p())
        .map(|tag| tag.content().and_then(|hex| PublicKey::from_hex(hex).ok()))
        .collect();
    if recipients != [Some(*soko)] {
        return Err(RegistrationRefusal::WrongRecipient {
            soko: soko.to_hex(),
        });
    }
    if event.kind.as_u16() != REGISTRATION_KIND {
        return Err(RegistrationRefusal::WrongKind(event.kind.as_u16()));
    }
    let created_at = event.created_at.as_secs();
    if created_at.abs_diff(now) > WINDOW_SECS {
        return Err(RegistrationRefusal::Stale { created_at, now });
    }
    Ok(())
}

/// What a registration event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The invite code; `None` when the tag's text cannot be a code (then no invite has it).
    pub code: Option<InviteCode>,
    /// The role asked for.
    pub role: Role,
    /// The name given, trimmed.
    pub name: Option<String>,
}

/// Reads the `invite`, `role` and `name` tags (each at most once; other tags are ignored).
pub fn claim(event: &Event) -> Result<Claim, RegistrationRefusal> {
    let single = |name: &str| -> Result<Option<&str>, RegistrationRefusal> {
        let mut values = event
            .tags
            .iter()
            .map(|tag| tag.as_slice())
            .filter(|tag| tag.first().map(String::as_str) == Some(name));
        let first = values.next();
        if values.next().is_some() {
            return Err(RegistrationRefusal::Malformed(format!(
                "the registration event has more than one `{name}` tag"
            )));
        }
        Ok(first.map(|tag| tag.get(1).map_or("", String::as_str)))
    };
    let code = single("invite")?.ok_or_else(|| {
        RegistrationRefusal::Malformed(
            "the registration event has no [\"invite\", \"<code>\"] tag".to_owned(),
        )
    })?;
    let role_name = single("role")?.ok_or_else(|| {
        RegistrationRefusal::Malformed(
            "the registration event has no [\"role\", \"agent\"] tag".to_owned(),
        )
    })?;
    let role = Role::parse(role_name)
        .filter(|role| *role != Role::Anonymous)
        .ok_or_else(|| {
            RegistrationRefusal::Malformed(format!(
                "{role_name:?} is not a role; registrations ask for \"agent\""
            ))
        })?;
    let name = match single("name")?.map(str::trim) {
        None | Some("") => None,
        Some(name) if name.chars().count() > MAX_NAME_CHARS => {
            return Err(RegistrationRefusal::Malformed(format!(
                "a name has at most {MAX_NAME_CHARS} characters"
            )))
        }
        Some(name) => Some(name.to_owned()),
    };
    Ok(Claim {
        code: InviteCode::parse(code),
        role,
        name,
    })
}

/// Registration over the invites, users and nonces trees.
#[derive(Debug, Clone)]
pub struct Registration {
    soko: PublicKey,
    /// Registration event id (32 bytes) → its `created_at`, while it is inside the window.
    nonces: Typed<u64>,
    invites: Invites,
    users: Users,
}

/// Why the registration transaction stopped.
enum Abort {
    Refused(RegistrationRefusal),
    Store(StoreError),
}

impl Registration {
    /// Opens the nonces tree; registrations must name `soko` (the bot's key) in their `p` tag.
    pub fn open(
        store: &Store,
        soko: PublicKey,
        invites: Invites,
        users: Users,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            soko,
            nonces: store.tree("registration/nonces")?,
            invites,
            users,
        })
    }

    /// Registers `sender` with `event` at `now`, or says why not.
    pub fn register(
        &self,
        sender: PublicKey,
        event: &Event,
        now: u64,
    ) -> Result<UserRecord, RegisterError> {
        check_event(event, &sender, &self.soko, now)?;
        self.prune(now)?;
        if !self
            .nonces
            .insert_if_absent(event.id.as_bytes(), &event.created_at.as_secs())?
        {
            return Err(RegistrationRefusal::Replayed.into());
        }
        let admitted = self.admit(sender, event, now);
        if let Err(RegisterError::Store(_)) = &admitted {
            // soko failed, not the user: the same event may be presented again.
            self.nonces.remove(event.id.as_bytes())?;
        }
        admitted
    }

    /// Forgets nonces of events that the time window refuses anyway.
    fn prune(&self, now: u64) -> Result<(), StoreError> {
        for entry in self.nonces.iter() {
            let (id, created_at) = entry?;
            if created_at.saturating_add(WINDOW_SECS) < now {
                self.nonces.remove(&id)?;
            }
        }
        Ok(())
    }

    fn admit(
        &self,
        sender: PublicKey,
        event: &Event,
        now: u64,
    ) -> Result<UserRecord, RegisterError> {
        let claim = claim(event)?;
        let key = match &claim.code {
            Some(code) => self.invites.key_of(code),
            None => return Err(RegistrationRefusal::Invite(InviteRefusal::Unknown).into()),
        };
        let record = UserRecord {
            role: claim.role,
            registered_at: now,
            name: claim.name,
        };
        let user = self.users.tree().encode(&record)?;
        let is_admin = self.users.is_admin(&sender);
        let invites = self.invites.tree();
        let users = self.users.tree();
        let abort = |a: Abort| ConflictableTransactionError::Abort(a);
        let outcome = (invites.raw(), users.raw()).transaction(|(inv, usr)| {
            let stored = match inv.get(key)? {
                Some(bytes) => Some(invites.decode(&bytes).map_err(|e| abort(Abort::Store(e)))?),
                None => None,
            };
            let next = redeem(stored.as_ref(), claim.role, now)
                .map_err(|r| abort(Abort::Refused(RegistrationRefusal::Invite(r))))?;
            if is_admin {
                return Err(abort(Abort::Refused(
                    RegistrationRefusal::AlreadyRegistered(Role::Admin),
                )));
            }
            if let Some(bytes) = usr.get(sender.to_bytes())? {
                let existing = users.decode(&bytes).map_err(|e| abort(Abort::Store(e)))?;
                return Err(abort(Abort::Refused(
                    RegistrationRefusal::AlreadyRegistered(existing.role),
                )));
            }
            let next = invites.encode(&next).map_err(|e| abort(Abort::Store(e)))?;
            inv.insert(&key[..], next)?;
            usr.insert(&sender.to_bytes()[..], user.clone())?;
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(record),
            Err(TransactionError::Abort(Abort::Refused(refusal))) => Err(refusal.into()),
            Err(TransactionError::Abort(Abort::Store(e))) => Err(e.into()),
            Err(TransactionError::Storage(e)) => Err(StoreError::from(e).into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use nostr_sdk::{EventBuilder, Keys, Kind, Tag, Timestamp};

    use super::*;
    use crate::vault::Vault;

    const NOW: u64 = 1_800_000_000;

    fn registration(keys: &Keys, soko: PublicKey, tags: &[(&str, &str)], at: u64) -> Event {
        EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tag(Tag::public_key(soko))
            .tags(tags.iter().map(|(k, v)| Tag::parse([*k, *v]).expect("tag")))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .expect("sign")
    }

    #[test]
    fn event_checks_run_in_order() -> Result<(), Box<dyn std::error::Error>> {
        let soko = Keys::generate().public_key();
        let user = Keys::generate();
        let me = user.public_key();
        let good = registration(&user, soko, &[("invite", "x"), ("role", "agent")], NOW);
        assert_eq!(check_event(&good, &me, &soko, NOW), Ok(()));
        assert_eq!(check_event(&good, &me, &soko, NOW + WINDOW_SECS), Ok(()));
        assert_eq!(check_event(&good, &me, &soko, NOW - WINDOW_SECS), Ok(()));

        let mut forged = good.clone();
        forged.content = "changed".to_owned();
        assert_eq!(
            check_event(&forged, &me, &soko, NOW),
            Err(RegistrationRefusal::BadSignature)
        );
        let mut resigned = good.clone();
        resigned.sig = registration(&user, soko, &[], NOW).sig;
        assert_eq!(
            check_event(&resigned, &me, &soko, NOW),
            Err(RegistrationRefusal::BadSignature)
        );
        let other = Keys::generate().public_key();
        assert!(matches!(
            check_event(&good, &other, &soko, NOW),
            Err(RegistrationRefusal::SignerMismatch { .. })
        ));
        assert!(matches!(
            check_event(&good, &me, &other, NOW),
            Err(RegistrationRefusal::WrongRecipient { .. })
        ));
        let two_p = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tags([Tag::public_key(soko), Tag::public_key(other)])
            .custom_created_at(Timestamp::from(NOW))
            .sign_with_keys(&user)?;
        assert!(matches!(
            check_event(&two_p, &me, &soko, NOW),
            Err(RegistrationRefusal::WrongRecipient { .. })
        ));
        let note = EventBuilder::new(Kind::TextNote, "")
            .tag(Tag::public_key(soko))
            .custom_created_at(Timestamp::from(NOW))
            .sign_with_keys(&user)?;
        assert_eq!(
            check_event(&note, &me, &soko, NOW),
            Err(RegistrationRefusal::WrongKind(1))
        );
        for now in [NOW + WINDOW_SECS + 1, NOW - WINDOW_SECS - 1] {
            let refusal = check_event(&good, &me, &soko, now);
            assert_eq!(
                refusal,
                Err(RegistrationRefusal::Stale {
                    created_at: NOW,
                    now
                })
            );
        }
        let late = check_event(&good, &me, &soko, NOW + 61).map_err(|r| r.to_string());
        assert!(late.is_err_and(|m| m.contains("61 s behind")));
        // A forged event from someone else: the signature is checked first.
        assert_eq!(
            check_event(&forged, &other, &other, 0),
            Err(RegistrationRefusal::BadSignature)
        );
        Ok(())
    }

    #[test]
    fn claims_read_their_tags() {
        let soko = Keys::generate().public_key();
        let user = Keys::generate();
        let read = |tags: &[(&str, &str)]| claim(&registration(&user, soko, tags, NOW));
        let code = InviteCode::generate();
        let shown = code.reveal();
        assert_eq!(
            read(&[("invite", &shown), ("role", "agent"), ("name", " Wanjiru ")]),
            Ok(Claim {
                code: Some(code),
                role: Role::Agent,
                name: Some("Wanjiru".to_owned()),
            })
        );
        assert_eq!(
            read(&[("invite", "nope"), ("role", "merchant")]).map(|c| (c.code, c.role)),
            Ok((None, Role::Merchant))
        );
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        for tags in [
            &[("role", "agent")][..],
            &[("invite", "x")],
            &[("invite", "x"), ("role", "king")],
            &[("invite", "x"), ("role", "anonymous")],
            &[("invite", "x"), ("invite", "y"), ("role", "agent")],
            &[("invite", "x"), ("role", "agent"), ("name", &long)],
        ] {
            assert!(
                matches!(read(tags), Err(RegistrationRefusal::Malformed(_))),
                "{tags:?}"
            );
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        soko: PublicKey,
        admin: Keys,
        invites: Invites,
        users: Users,
        registration: Registration,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let vault = Vault::from_root([3; 32]).expect("vault");
        let admin = Keys::generate();
        let admins: HashSet<PublicKey> = [admin.public_key()].into_iter().collect();
        let invites = Invites::open(&store, &vault).expect("invites");
        let users = Users::open(&store, Arc::new(admins)).expect("users");
        let soko = Keys::generate().public_key();
        let registration =
            Registration::open(&store, soko, invites.clone(), users.clone()).expect("open");
        Fixture {
            _dir: dir,
            soko,
            admin,
            invites,
            users,
            registration,
        }
    }

    fn refusal(result: Result<UserRecord, RegisterError>) -> Option<RegistrationRefusal> {
        match result {
            Err(RegisterError::Refused(refusal)) => Some(refusal),
            _ => None,
        }
    }

    #[test]
    fn a_registration_takes_a_use_once() -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture();
        let (code, _) = f
            .invites
            .create("agent", Some(1), None, &f.admin.public_key(), NOW)?;
        let user = Keys::generate();
        let tags = [("invite", code.reveal()), ("role", "agent".to_owned())];
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let event = registration(&user, f.soko, &tags, NOW);
        let record = f.registration.register(user.public_key(), &event, NOW)?;
        assert_eq!(record.role, Role::Agent);
        assert_eq!(f.users.role(&user.public_key())?, Role::Agent);
        assert_eq!(f.invites.get(&code)?.map(|i| i.uses_left), Some(0));
        assert_eq!(
            refusal(f.registration.register(user.public_key(), &event, NOW + 1)),
            Some(RegistrationRefusal::Replayed)
        );
        // The same user with a fresh event: the invite is used up, and that is said first.
        let again = registration(&user, f.soko, &tags, NOW + 1);
        assert_eq!(
            refusal(f.registration.register(user.public_key(), &again, NOW + 1)),
            Some(RegistrationRefusal::Invite(InviteRefusal::Used))
        );
        // An admin with a valid invite is refused without taking its use.
        let (spare, _) = f
            .invites
            .create("agent", None, None, &f.admin.public_key(), NOW)?;
        let tags = [("invite", spare.reveal()), ("role", "agent".to_owned())];
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let by_admin = registration(&f.admin, f.soko, &tags, NOW);
        assert_eq!(
            refusal(
                f.registration
                    .register(f.admin.public_key(), &by_admin, NOW)
            ),
            Some(RegistrationRefusal::AlreadyRegistered(Role::Admin))
        );
        assert_eq!(f.invites.get(&spare)?.map(|i| i.uses_left), Some(1));
        Ok(())
    }

    #[test]
    fn nonces_outside_the_window_are_forgotten() -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture();
        let user = Keys::generate();
        let event = registration(&user, f.soko, &[("role", "agent")], NOW);
        // Malformed, but its nonce is recorded: the same event stays refused as a replay.
        assert!(matches!(
            refusal(f.registration.register(user.public_key(), &event, NOW)),
            Some(RegistrationRefusal::Malformed(_))
        ));
        assert_eq!(
            refusal(
                f.registration
                    .register(user.public_key(), &event, NOW + WINDOW_SECS)
            ),
            Some(RegistrationRefusal::Replayed)
        );
        assert_eq!(f.registration.nonces.len(), 1);
        let later = NOW + WINDOW_SECS + 1;
        assert!(matches!(
            refusal(f.registration.register(user.public_key(), &event, later)),
            Some(RegistrationRefusal::Stale { .. })
        ));
        let fresh = registration(&user, f.soko, &[("role", "agent")], later);
        let _ = f.registration.register(user.public_key(), &fresh, later);
        assert_eq!(f.registration.nonces.len(), 1, "the old nonce was pruned");
        Ok(())
    }

    #[test]
    fn racing_registrations_share_the_last_use() -> Result<(), Box<dyn std::error::Error>> {
        let f = fixture();
        let (code, _) = f
            .invites
            .create("agent", Some(3), None, &f.admin.public_key(), NOW)?;
        let shown = code.reveal();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let registration = f.registration.clone();
                let user = Keys::generate();
                let event = registration_event(&user, f.soko, &shown);
                std::thread::spawn(move || registration.register(user.public_key(), &event, NOW))
            })
            .collect();
        let mut won = 0;
        let mut used = 0;
        for handle in handles {
            match handle.join().map_err(|_| "thread panicked")? {
                Ok(_) => won += 1,
                Err(RegisterError::Refused(RegistrationRefusal::Invite(InviteRefusal::Used))) => {
                    used += 1
                }
                Err(other) => return Err(other.into()),
            }
        }
        assert_eq!((won, used), (3, 5));
        assert_eq!(f.invites.get(&code)?.map(|i| i.uses_left), Some(0));
        Ok(())
    }

    fn registration_event(user: &Keys, soko: PublicKey, code: &str) -> Event {
        registration(user, soko, &[("invite", code), ("role", "agent")], NOW)
    }
}
