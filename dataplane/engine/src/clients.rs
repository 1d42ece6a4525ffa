//! Client ids known to a shard, in one table for the two roles a shard has for an id:
//!
//! - the id's *home* shard keeps the directory entry: which shard and connection own the
//!   session now (see `directory.rs`);
//! - the *owner* shard finds the session by id.
//!
//! With few shards most ids are homed where they are owned, so one entry (one key, one slot)
//! serves both; idle connections cost less (docs/benchmarks.md, idle connections).

use tachyon_codec::Utf8Str;

use crate::hash::KeyedMap;
use crate::{ConnId, SessionKey, ShardId};

#[derive(Debug, Default)]
struct ClientEntry {
    /// The session of this id on this shard.
    session: Option<SessionKey>,
    /// At the home shard: the shard and connection whose claim owns the session.
    owner: Option<(ShardId, ConnId)>,
}

#[derive(Debug, Default)]
pub(crate) struct Clients {
    map: KeyedMap<Utf8Str, ClientEntry>,
}

impl Clients {
    pub fn session(&self, id: &Utf8Str) -> Option<SessionKey> {
        self.map.get(id).and_then(|e| e.session)
    }

    pub fn set_session(&mut self, id: Utf8Str, key: SessionKey) {
        self.map.entry(id).or_default().session = Some(key);
    }

    /// Forgets the session of `id` if it is `key`.
    pub fn remove_session(&mut self, id: &Utf8Str, key: SessionKey) {
        self.update(id, |e| {
            if e.session == Some(key) {
                e.session = None;
            }
        });
    }

    #[cfg(test)]
    pub fn owner(&self, id: &Utf8Str) -> Option<(ShardId, ConnId)> {
        self.map.get(id).and_then(|e| e.owner)
    }

    /// Records the new owner; returns the previous one.
    pub fn set_owner(
        &mut self,
        id: Utf8Str,
        owner: (ShardId, ConnId),
    ) -> Option<(ShardId, ConnId)> {
        self.map.entry(id).or_default().owner.replace(owner)
    }

    /// Forgets the owner of `id` if it is `owner`.
    pub fn remove_owner(&mut self, id: &Utf8Str, owner: (ShardId, ConnId)) {
        self.update(id, |e| {
            if e.owner == Some(owner) {
                e.owner = None;
            }
        });
    }

    fn update(&mut self, id: &Utf8Str, f: impl FnOnce(&mut ClientEntry)) {
        // `entry` would need an owned key; look up by reference and remove empty entries.
        let Some(e) = self.map.get_mut(id) else {
            return;
        };
        f(e);
        if e.session.is_none() && e.owner.is_none() {
            self.map.remove(id);
        }
    }

    /// Ids with an entry, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_serves_both_roles_and_goes_with_the_last() {
        let mut c = Clients::default();
        let id = Utf8Str::from_static("c1");
        assert_eq!(c.set_owner(id.clone(), (0, ConnId(5))), None);
        c.set_session(id.clone(), SessionKey::for_tests(1));
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.set_owner(id.clone(), (1, ConnId(6))),
            Some((0, ConnId(5)))
        );
        c.remove_owner(&id, (0, ConnId(5))); // not the owner any more: ignored
        assert_eq!(c.owner(&id), Some((1, ConnId(6))));
        c.remove_owner(&id, (1, ConnId(6)));
        assert_eq!(c.session(&id), Some(SessionKey::for_tests(1)));
        c.remove_session(&id, SessionKey::for_tests(2)); // another session: ignored
        assert_eq!(c.len(), 1);
        c.remove_session(&id, SessionKey::for_tests(1));
        assert_eq!(c.len(), 0);
    }
}
