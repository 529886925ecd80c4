//! Turning "something changed in the log" into the viewer's three events.
//!
//! A SQLite file written by another process and a fleet's PostgreSQL only say *that* something
//! changed (a `-wal` write, a `pg_notify`). Both watchers keep the message count they last saw
//! per conversation and compare it with fresh counts to say which conversations are new,
//! updated or deleted. Ten thousand conversations cost well under a megabyte.

use std::collections::{HashMap, HashSet};

use crate::store::StoreEvent;

/// What a batch of fresh counts covers, which says what an absent conversation means.
pub enum Coverage<'a> {
    /// Every conversation: one not in the batch was deleted.
    Everything,
    /// Exactly these ids: one of them not in the batch was deleted.
    Ids(&'a HashSet<String>),
    /// Only recently changed ones: absence means nothing.
    Recent,
}

/// The last known message count of every conversation.
#[derive(Debug, Default)]
pub struct KnownCounts {
    counts: HashMap<String, i64>,
}

impl KnownCounts {
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Records `fresh` counts and returns the events that tell the difference.
    pub fn apply(
        &mut self,
        fresh: impl IntoIterator<Item = (String, i64)>,
        coverage: Coverage<'_>,
    ) -> Vec<StoreEvent> {
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        for (id, count) in fresh {
            match self.counts.insert(id.clone(), count) {
                None => events.push(StoreEvent::ConversationNew(id.clone())),
                Some(before) if before != count => {
                    events.push(StoreEvent::ConversationUpdated(id.clone()))
                }
                Some(_) => {}
            }
            if !matches!(coverage, Coverage::Recent) {
                seen.insert(id);
            }
        }
        let gone: Vec<String> = match coverage {
            Coverage::Everything => self
                .counts
                .keys()
                .filter(|id| !seen.contains(*id))
                .cloned()
                .collect(),
            Coverage::Ids(ids) => ids
                .iter()
                .filter(|id| !seen.contains(*id) && self.counts.contains_key(*id))
                .cloned()
                .collect(),
            Coverage::Recent => Vec::new(),
        };
        for id in gone {
            self.counts.remove(&id);
            events.push(StoreEvent::ConversationDeleted(id));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(id, n)| (id.to_string(), *n)).collect()
    }

    #[test]
    fn tells_new_updated_and_deleted_apart() {
        let mut known = KnownCounts::default();
        known.apply(counts(&[("a", 1), ("b", 2)]), Coverage::Everything);
        let events = known.apply(counts(&[("a", 2), ("c", 1)]), Coverage::Everything);
        assert_eq!(
            events,
            vec![
                StoreEvent::ConversationUpdated("a".into()),
                StoreEvent::ConversationNew("c".into()),
                StoreEvent::ConversationDeleted("b".into()),
            ]
        );
        assert_eq!(known.len(), 2);
    }

    #[test]
    fn partial_batches_only_delete_what_they_cover() {
        let mut known = KnownCounts::default();
        known.apply(counts(&[("a", 1), ("b", 1)]), Coverage::Everything);
        assert!(
            known
                .apply(counts(&[("a", 1)]), Coverage::Recent)
                .is_empty()
        );
        let asked: HashSet<String> = ["b".to_string(), "zz".to_string()].into();
        assert_eq!(
            known.apply(Vec::new(), Coverage::Ids(&asked)),
            vec![StoreEvent::ConversationDeleted("b".into())]
        );
        assert_eq!(known.len(), 1);
    }
}
