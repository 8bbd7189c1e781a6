//! What a whole write of a state kept as records changes, whichever store keeps them (SQL
//! rows, `records.rs`; S3 objects, `s3/`): the records of tenants the state no longer holds
//! removed, those recorded and not written yet written, each only at the generation it was
//! last seen at, and the header moved on only when what it says changed.

use super::header::Header;
use super::{State, TenantState};

/// A record written: the tenant, the generation it must have now (0: none yet), and the one
/// it gets.
pub struct RecordWrite<'a> {
    pub slug: &'a str,
    pub expected: u64,
    pub generation: u64,
    pub tenant: &'a TenantState,
}

/// A whole write of a state (its serial already moved by `prepare_snapshot`).
pub struct WholeWrite<'a> {
    /// Records the state no longer holds, each with the generation it must have now.
    pub removed: Vec<(&'a str, u64)>,
    pub writes: Vec<RecordWrite<'a>>,
    /// The header as it is written, with the generation it must have now (0: none yet) and
    /// the one it gets; `None` when it would say what it says already.
    pub header: Option<(Header, u64, u64)>,
}

impl<'a> WholeWrite<'a> {
    /// The write of `state`, whose header says `header` (as the store keeps it).
    pub fn of(state: &'a State, header: Header) -> WholeWrite<'a> {
        let removed: Vec<(&str, u64)> = state
            .generations
            .iter()
            .filter(|(slug, _)| {
                !state.tenants.contains_key(*slug) && !state.let_go.contains_key(*slug)
            })
            .map(|(slug, g)| (slug.as_str(), *g))
            .collect();
        let writes = state
            .unwritten
            .iter()
            .filter_map(|slug| {
                let tenant = state.tenants.get(slug)?;
                let expected = state.generations.get(slug).copied().unwrap_or(0);
                Some(RecordWrite {
                    slug,
                    expected,
                    generation: expected + 1,
                    tenant,
                })
            })
            .collect();
        // The header moves on by one, and takes on the generations of the records removed,
        // so the serial (the header's and every record's) never goes back. A header that
        // would say what it says already is not written again: a run that changes one
        // tenant writes that tenant's record, and no more.
        let taken_on: u64 = removed.iter().map(|(_, g)| g).sum();
        let unchanged = removed.is_empty()
            && state.generation > 0
            && state.header_said.as_deref() == Some(header.clone().said().as_str());
        let header = (!unchanged).then(|| {
            let generation = state.generation + 1 + taken_on;
            (header, state.generation, generation)
        });
        WholeWrite {
            removed,
            writes,
            header,
        }
    }

    /// What says how the state stands once this write is done.
    pub fn written(&self) -> Written {
        let mut generations: Vec<(String, Option<u64>)> = self
            .removed
            .iter()
            .map(|(slug, _)| (slug.to_string(), None))
            .collect();
        generations.extend(
            self.writes
                .iter()
                .map(|w| (w.slug.to_string(), Some(w.generation))),
        );
        Written {
            header: self
                .header
                .as_ref()
                .map(|(h, _, generation)| (h.clone().said(), *generation)),
            generations,
        }
    }
}

/// How a state stands once its whole write is done.
pub struct Written {
    /// What the header says now and its generation, when it was written.
    header: Option<(String, u64)>,
    generations: Vec<(String, Option<u64>)>,
}

impl Written {
    /// `state` as it stands once this write is done.
    pub fn done(self, state: &mut State) {
        if let Some((said, generation)) = self.header {
            state.generation = generation;
            state.header_said = Some(said);
            state.header_behind = false;
        }
        for (slug, generation) in self.generations {
            match generation {
                Some(g) => state.generations.insert(slug, g),
                None => state.generations.remove(&slug),
            };
        }
        state.unwritten.clear();
        state.serial = state.generation + state.generations.values().sum::<u64>();
    }
}
