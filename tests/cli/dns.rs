//! The Route53 DNS target through the real binary, against moto's server (which serves
//! Route53 beside S3), checked through the Route53 API itself. Each test makes a hosted
//! zone of its own and deletes it at the end.

use std::collections::BTreeMap;

use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;

use crate::moto::ENDPOINT_ENV;
use crate::support::{text, Repo};

pub struct Zone {
    pub id: String,
    /// `t<id>.example.com`, without the final dot.
    pub name: String,
    endpoint: String,
    client: Client,
    rt: tokio::runtime::Runtime,
}

/// A record set as the test reads it: (type, values).
type Records = BTreeMap<String, (String, Vec<String>)>;

impl Zone {
    pub fn new() -> Zone {
        let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| {
            panic!(
                "the DNS tests need moto's server (it serves Route53) and {ENDPOINT_ENV} naming it: run ./scripts/test"
            )
        });
        let config = aws_sdk_route53::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        let client = Client::from_conf(config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = format!(
            "t{}.example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let out = rt
            .block_on(
                client
                    .create_hosted_zone()
                    .name(&name)
                    .caller_reference(uuid::Uuid::new_v4().to_string())
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "moto's server at {endpoint} does not answer Route53: {}",
                    aws_sdk_route53::error::DisplayErrorContext(e)
                )
            });
        let id = out
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string();
        Zone {
            id,
            name,
            endpoint,
            client,
            rt,
        }
    }

    pub fn repo(&self) -> Repo {
        let mut repo = Repo::example();
        repo.write(
            "tenant-reconcile.hcl",
            &format!(
                "targets {{\n  dns = \"route53\"\n}}\nroute53 {{\n  zone_id     = \"{}\"\n  record_name = \"{{slug}}.{}\"\n  target      = \"ingress.example.com\"\n  ttl         = 60\n}}\n",
                self.id, self.name
            ),
        );
        repo.env = [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        repo
    }

    pub fn record(&self, slug: &str) -> String {
        format!("{slug}.{}", self.name)
    }

    /// Every record set of the zone but its SOA and NS, by name (without the final dot).
    pub fn records(&self) -> Records {
        let out = self
            .rt
            .block_on(
                self.client
                    .list_resource_record_sets()
                    .hosted_zone_id(&self.id)
                    .send(),
            )
            .unwrap();
        out.resource_record_sets()
            .iter()
            .filter(|s| !matches!(s.r#type(), RrType::Soa | RrType::Ns))
            .map(|s| {
                (
                    s.name().trim_end_matches('.').to_string(),
                    (
                        s.r#type().as_str().to_string(),
                        s.resource_records()
                            .iter()
                            .map(|r| r.value().to_string())
                            .collect(),
                    ),
                )
            })
            .collect()
    }

    pub fn change(&self, action: ChangeAction, name: &str, kind: RrType, value: &str) {
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(kind)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(value).build().unwrap())
            .build()
            .unwrap();
        let batch = ChangeBatch::builder()
            .changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        self.rt
            .block_on(
                self.client
                    .change_resource_record_sets()
                    .hosted_zone_id(&self.id)
                    .change_batch(batch)
                    .send(),
            )
            .unwrap();
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        for (name, (kind, values)) in self.records() {
            for v in values {
                self.change(ChangeAction::Delete, &name, RrType::from(kind.as_str()), &v);
            }
        }
        let _ = self
            .rt
            .block_on(self.client.delete_hosted_zone().id(&self.id).send());
    }
}

#[test]
fn bad_dns_settings_and_names_are_refused_before_any_call() {
    let zone = Zone::new();
    let repo = zone.repo();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  dns = \"route53\"\n}\nroute53 {\n  zone_id     = \"../x\"\n  record_name = \"{tenant}.example.com\"\n  target      = \"ingress_1.example.com\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for field in ["route53.zone_id", "route53.record_name", "route53.target"] {
        assert!(err.contains(field), "{field} not in:\n{err}");
    }
    assert!(err.contains("tenant-reconcile.hcl:5"), "{err}");
    // A pattern that makes a name DNS refuses names the tenant file and the field.
    let long = "a".repeat(30);
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "targets {{\n  dns = \"route53\"\n}}\nroute53 {{\n  zone_id     = \"{}\"\n  record_name = \"{long}{long}{{slug}}.{}\"\n  target      = \"ingress.example.com\"\n}}\n",
            zone.id, zone.name
        ),
    );
    let out = repo.run(&["validate"]);
    let err = text(&out.stderr);
    assert!(err.contains("tenants/acme.yaml:1"), "{err}");
    assert!(err.contains("labels are 1 to 63 characters"), "{err}");
    assert!(zone.records().is_empty(), "nothing was made");
}
