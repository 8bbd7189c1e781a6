//! The choice of a server for a tenant not placed yet.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use super::{Ask, Server};
use crate::model::count::thousands;

/// Places tenants one after another on `servers`, counting each placement into the load it
/// started from, so a plan that places 3,000 tenants spreads them as 3,000 applies one
/// after another would.
#[derive(Debug, Clone)]
pub struct Placer<'s> {
    servers: &'s [Server],
    /// Tenants on each server, by its name.
    loads: BTreeMap<String, u32>,
}

/// Where a tenant goes, and that server's tenants once it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub server: String,
    pub region: String,
    pub tenants: u32,
    pub cap: u32,
    /// Its data is on that server already: it was not chosen, only recorded.
    pub found: bool,
}

impl fmt::Display for Placed {
    /// `eu-west-1, 412 of 1,000 tenants`, after `its data is there already: ` for one found.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.found {
            f.write_str("its data is there already: ")?;
        }
        write!(
            f,
            "{}, {} of {} tenants",
            self.region,
            thousands(self.tenants.into()),
            thousands(self.cap.into())
        )
    }
}

/// Why no server takes a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Its file names a server the config does not have.
    NoSuchServer { name: String, known: Vec<String> },
    /// No server is in its region.
    NoServerInRegion { region: String },
    /// Servers in its region, none of which takes it: each one's reason.
    NoneTakes { region: String, why: Vec<String> },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NoSuchServer { name, known } => write!(
                f,
                "no Postgres server is called {name:?} (the config has {})",
                known.join(", ")
            ),
            Refused::NoServerInRegion { region } => write!(
                f,
                "no Postgres server is in its region, {region}: a tenant's data stays in its region"
            ),
            Refused::NoneTakes { region, why } => write!(
                f,
                "no Postgres server in {region} takes it: {}",
                why.join("; ")
            ),
        }
    }
}

impl<'s> Placer<'s> {
    /// `loads` holds the tenants already on each server; a server it does not name has none.
    pub fn new(servers: &'s [Server], loads: impl IntoIterator<Item = (String, u32)>) -> Self {
        Placer {
            servers,
            loads: loads.into_iter().collect(),
        }
    }

    /// The tenants on `server` now, counting those placed by this placer.
    pub fn load(&self, server: &str) -> u32 {
        self.loads.get(server).copied().unwrap_or(0)
    }

    /// A tenant whose data is on the server `name` already, counted into its load whatever
    /// its cap, region or labels say: where data is, is a fact, not a choice. `None` when
    /// there is no such server.
    pub fn found_on(&mut self, name: &str) -> Option<Placed> {
        let server = self.servers.iter().find(|s| s.name == name)?;
        let tenants = self.load(name) + 1;
        self.loads.insert(name.to_string(), tenants);
        Some(Placed {
            server: server.name.clone(),
            region: server.region.clone(),
            tenants,
            cap: server.cap,
            found: true,
        })
    }

    /// The server `ask` goes to, counted into its load; or why none takes it.
    pub fn place(&mut self, ask: &Ask<'_>) -> Result<Placed, Refused> {
        let server = self.choose(ask)?;
        let tenants = self.load(&server.name) + 1;
        self.loads.insert(server.name.clone(), tenants);
        Ok(Placed {
            server: server.name.clone(),
            region: server.region.clone(),
            tenants,
            cap: server.cap,
            found: false,
        })
    }

    fn choose(&self, ask: &Ask<'_>) -> Result<&'s Server, Refused> {
        let named: Vec<&'s Server> = match ask.server {
            Some(name) => match self.servers.iter().find(|s| s.name == name) {
                Some(s) => vec![s],
                None => {
                    return Err(Refused::NoSuchServer {
                        name: name.to_string(),
                        known: self.servers.iter().map(|s| s.name.clone()).collect(),
                    })
                }
            },
            None => self.servers.iter().collect(),
        };
        // The region first, whatever else is asked: a pin to a server elsewhere is refused
        // like any other server there.
        let in_region: Vec<&'s Server> = named
            .iter()
            .copied()
            .filter(|s| s.region == ask.region)
            .collect();
        if in_region.is_empty() {
            return Err(match ask.server {
                Some(name) => Refused::NoneTakes {
                    region: ask.region.to_string(),
                    why: vec![format!(
                        "{name} is in {}",
                        named.first().map_or("", |s| s.region.as_str())
                    )],
                },
                None => Refused::NoServerInRegion {
                    region: ask.region.to_string(),
                },
            });
        }
        let mut why = Vec::new();
        let mut best: Option<&'s Server> = None;
        for server in in_region {
            match self.refusal(server, ask) {
                Some(reason) => why.push(format!("{} {reason}", server.name)),
                None => {
                    if best.is_none_or(|b| self.lighter(server, b) == Ordering::Less) {
                        best = Some(server);
                    }
                }
            }
        }
        best.ok_or_else(|| Refused::NoneTakes {
            region: ask.region.to_string(),
            why,
        })
    }

    /// Why `server` cannot take `ask`, if it cannot.
    fn refusal(&self, server: &Server, ask: &Ask<'_>) -> Option<String> {
        if server.draining {
            return Some("is draining".into());
        }
        if !server.isolation.contains(&ask.isolation) {
            return Some(format!("takes no {} tenants", ask.isolation.as_str()));
        }
        let missing: Vec<String> = ask
            .labels
            .iter()
            .filter(|(k, v)| server.labels.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
        if !missing.is_empty() {
            return Some(format!("is not labelled {}", missing.join(", ")));
        }
        let load = self.load(&server.name);
        if load >= server.cap {
            return Some(format!(
                "is full ({} of {} tenants)",
                thousands(load.into()),
                thousands(server.cap.into())
            ));
        }
        None
    }

    /// Which of two servers is less loaded: the smaller share of its cap, then fewer
    /// tenants, then the name, so the same loads always give the same choice.
    fn lighter(&self, a: &Server, b: &Server) -> Ordering {
        let (la, lb) = (u64::from(self.load(&a.name)), u64::from(self.load(&b.name)));
        (la * u64::from(b.cap))
            .cmp(&(lb * u64::from(a.cap)))
            .then(la.cmp(&lb))
            .then(a.name.cmp(&b.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tenant::Isolation;

    const ALL: [Isolation; 3] = [Isolation::Shared, Isolation::Schema, Isolation::Database];

    fn server(name: &str, region: &str, cap: u32, labels: &[(&str, &str)]) -> Server {
        Server {
            name: name.into(),
            region: region.into(),
            cap,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            isolation: ALL.to_vec(),
            draining: false,
        }
    }

    fn ask<'a>(region: &'a str, labels: &'a BTreeMap<String, String>) -> Ask<'a> {
        Ask {
            region,
            isolation: Isolation::Schema,
            server: None,
            labels,
        }
    }

    fn fleet() -> Vec<Server> {
        vec![
            server("eu-1", "eu-west-1", 1000, &[]),
            server("eu-2", "eu-west-1", 1000, &[]),
            server("us-1", "us-east-1", 1000, &[("tier", "dedicated")]),
        ]
    }

    #[test]
    fn tenants_go_to_their_region_spread_within_one_of_even() {
        let servers = fleet();
        let none = BTreeMap::new();
        let mut placer = Placer::new(&servers, [("eu-1".to_string(), 7)]);
        for _ in 0..101 {
            let placed = placer.place(&ask("eu-west-1", &none)).unwrap();
            assert_eq!(placed.region, "eu-west-1");
        }
        // 7 + 101 = 108 over two servers.
        assert_eq!((placer.load("eu-1"), placer.load("eu-2")), (54, 54));
        assert_eq!(placer.load("us-1"), 0);
        let us = placer.place(&ask("us-east-1", &none)).unwrap();
        assert_eq!(us.to_string(), "us-east-1, 1 of 1,000 tenants");
    }

    #[test]
    fn the_same_loads_give_the_same_choice_and_a_share_of_the_cap_decides() {
        let servers = vec![
            server("b", "eu-west-1", 100, &[]),
            server("a", "eu-west-1", 100, &[]),
            server("big", "eu-west-1", 1000, &[]),
        ];
        let none = BTreeMap::new();
        // Even: the name decides.
        let mut placer = Placer::new(&servers[..2], []);
        assert_eq!(placer.place(&ask("eu-west-1", &none)).unwrap().server, "a");
        // 50 of 100 is fuller than 400 of 1,000.
        let mut placer = Placer::new(
            &servers,
            [
                ("a".to_string(), 50),
                ("b".to_string(), 50),
                ("big".to_string(), 400),
            ],
        );
        assert_eq!(
            placer.place(&ask("eu-west-1", &none)).unwrap().server,
            "big"
        );
    }

    #[test]
    fn a_full_server_takes_no_one_and_a_full_region_is_refused_with_each_reason() {
        let servers = fleet();
        let none = BTreeMap::new();
        let mut placer = Placer::new(
            &servers,
            [("eu-1".to_string(), 1000), ("eu-2".to_string(), 999)],
        );
        assert_eq!(
            placer.place(&ask("eu-west-1", &none)).unwrap().server,
            "eu-2"
        );
        let refused = placer.place(&ask("eu-west-1", &none)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "no Postgres server in eu-west-1 takes it: eu-1 is full (1,000 of 1,000 tenants); eu-2 is full (1,000 of 1,000 tenants)"
        );
        // The refusal counted nothing.
        assert_eq!(placer.load("eu-2"), 1000);
    }

    #[test]
    fn a_region_without_a_server_is_refused_and_never_served_from_elsewhere() {
        let servers = fleet();
        let none = BTreeMap::new();
        let mut placer = Placer::new(&servers, []);
        assert_eq!(
            placer.place(&ask("ap-south-1", &none)).unwrap_err(),
            Refused::NoServerInRegion {
                region: "ap-south-1".into()
            }
        );
        // Pinned to a server of another region: still refused.
        let mut pinned = ask("eu-west-1", &none);
        pinned.server = Some("us-1");
        assert_eq!(
            placer.place(&pinned).unwrap_err().to_string(),
            "no Postgres server in eu-west-1 takes it: us-1 is in us-east-1"
        );
    }

    #[test]
    fn labels_isolation_and_pins_narrow_the_choice() {
        let mut servers = fleet();
        servers.push(server("us-2", "us-east-1", 1000, &[]));
        servers[3].isolation = vec![Isolation::Shared];
        let dedicated: BTreeMap<String, String> =
            [("tier".to_string(), "dedicated".to_string())].into();
        let none = BTreeMap::new();
        let mut placer = Placer::new(&servers, [("us-1".to_string(), 500)]);
        // Only us-1 carries the label, however loaded.
        assert_eq!(
            placer.place(&ask("us-east-1", &dedicated)).unwrap().server,
            "us-1"
        );
        // us-2 takes shared tenants only, so a schema tenant goes to us-1 too.
        assert_eq!(
            placer.place(&ask("us-east-1", &none)).unwrap().server,
            "us-1"
        );
        let mut shared = ask("us-east-1", &none);
        shared.isolation = Isolation::Shared;
        assert_eq!(placer.place(&shared).unwrap().server, "us-2");
        // A pin wins over the load.
        let mut pinned = ask("eu-west-1", &none);
        pinned.server = Some("eu-2");
        for _ in 0..3 {
            assert_eq!(placer.place(&pinned).unwrap().server, "eu-2");
        }
        assert_eq!(
            placer.place(&ask("eu-west-1", &dedicated)).unwrap_err().to_string(),
            "no Postgres server in eu-west-1 takes it: eu-1 is not labelled tier = \"dedicated\"; eu-2 is not labelled tier = \"dedicated\""
        );
        // A server being drained takes no one, pinned or not.
        let mut drained = servers.clone();
        drained[1].draining = true;
        assert_eq!(
            Placer::new(&drained, [])
                .place(&pinned)
                .unwrap_err()
                .to_string(),
            "no Postgres server in eu-west-1 takes it: eu-2 is draining"
        );
        let mut database = ask("us-east-1", &none);
        database.isolation = Isolation::Database;
        assert_eq!(
            Placer::new(&servers[3..], [])
                .place(&database)
                .unwrap_err()
                .to_string(),
            "no Postgres server in us-east-1 takes it: us-2 takes no database tenants"
        );
        pinned.server = Some("eu-9");
        assert_eq!(
            placer.place(&pinned).unwrap_err().to_string(),
            "no Postgres server is called \"eu-9\" (the config has eu-1, eu-2, us-1, us-2)"
        );
    }
}
