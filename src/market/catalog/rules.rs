//! Which version of a listing the catalog keeps (NIP-01, NIP-09) and whether a new one gets
//! in when the catalog is full: pure rules, the index applies them.

use std::cmp::Ordering;

/// One version of a listing, as far as choosing between versions goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The event's `created_at`.
    pub created_at: u64,
    /// The event's id (for a tombstone from an `a` tag: the deletion's).
    pub id: [u8; 32],
    /// A deletion tombstone rather than a listing.
    pub deleted: bool,
}

/// True when `new` replaces `old` (two versions of one listing).
pub fn supersedes(new: &Version, old: &Version) -> bool {
    match new.created_at.cmp(&old.created_at) {
        Ordering::Greater => true,
        Ordering::Less => false,
        // A deletion covers everything up to its own time, ties included (NIP-09); between
        // two listings the lower id wins (NIP-01).
        Ordering::Equal => match (old.deleted, new.deleted) {
            (true, _) => false,
            (false, true) => true,
            (false, false) => new.id < old.id,
        },
    }
}

/// What to do with a listing the catalog does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There is room.
    Insert,
    /// Full: the oldest entry goes to make room.
    EvictOldest,
    /// Full of newer entries: this one is not kept.
    Refuse,
}

/// Admission of a new listing created at `created_at` into a catalog of `len` entries bounded
/// by `max`, whose oldest entry was created at `oldest`.
pub fn admit(len: usize, max: usize, oldest: Option<u64>, created_at: u64) -> Admission {
    if len < max {
        return Admission::Insert;
    }
    match oldest {
        Some(oldest) if created_at > oldest => Admission::EvictOldest,
        _ => Admission::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(created_at: u64, id: u8, deleted: bool) -> Version {
        Version {
            created_at,
            id: [id; 32],
            deleted,
        }
    }

    #[test]
    fn newer_replaces_older_is_ignored_ties_keep_the_lower_id() {
        let old = version(100, 5, false);
        assert!(supersedes(&version(101, 9, false), &old));
        assert!(!supersedes(&version(99, 1, false), &old));
        assert!(supersedes(&version(100, 4, false), &old));
        assert!(!supersedes(&version(100, 6, false), &old));
        assert!(
            !supersedes(&old, &old),
            "the same event again changes nothing"
        );
    }

    #[test]
    fn a_deletion_covers_its_own_time_and_only_a_newer_listing_comes_back() {
        let listing = version(100, 5, false);
        let deleted = version(100, 9, true);
        assert!(supersedes(&deleted, &listing), "a tie goes to the deletion");
        assert!(!supersedes(&listing, &deleted));
        assert!(!supersedes(&version(100, 1, false), &deleted));
        assert!(!supersedes(&version(50, 1, false), &deleted));
        assert!(supersedes(&version(101, 9, false), &deleted));
        assert!(
            !supersedes(&version(99, 1, true), &listing),
            "an older deletion misses a newer listing"
        );
        assert!(!supersedes(&deleted, &deleted));
    }

    #[test]
    fn a_full_catalog_admits_only_what_is_newer_than_its_oldest() {
        assert_eq!(admit(0, 3, None, 1), Admission::Insert);
        assert_eq!(admit(2, 3, Some(50), 1), Admission::Insert);
        assert_eq!(admit(3, 3, Some(50), 51), Admission::EvictOldest);
        assert_eq!(admit(3, 3, Some(50), 50), Admission::Refuse);
        assert_eq!(admit(3, 3, Some(50), 10), Admission::Refuse);
        assert_eq!(admit(0, 0, None, 10), Admission::Refuse);
    }
}
