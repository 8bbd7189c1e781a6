"""moto's server, as the tests run it: moto's own `moto_server` with two Route53 behaviours
made as AWS has them.

- moto writes record values as CDATA sections, which AWS never sends and the Rust SDK's XML
  reader takes as empty; here they are escaped text, as AWS writes them.
- moto refuses a CREATE of a record that was created and deleted before (it looks in its
  journal of changes, and then at every record set from that name on), and lets a CREATE of
  a record that exists add a second one; here a CREATE fails exactly when a record set of
  that name and type exists, as on AWS.

And one behaviour of some S3-compatible stores, on request: with
`--ignore-conditional-writes`, PutObject ignores If-Match and If-None-Match and writes
whatever is there (what the s3 state backend must detect and refuse).

    python moto_server.py -H 127.0.0.1 -p PORT [--ignore-conditional-writes]
"""

import sys

import moto.route53.responses as route53

CDATA = "<![CDATA[{{ resource }}]]>"
if CDATA not in route53.LIST_RRSET_RESPONSE:
    sys.exit("moto's ListResourceRecordSets answer has changed; see tests/peers/moto_server.py")
route53.LIST_RRSET_RESPONSE = route53.LIST_RRSET_RESPONSE.replace(CDATA, "{{ resource|e }}")

import moto.route53.models as models  # noqa: E402
from moto.route53.exceptions import ResourceRecordAlreadyExists  # noqa: E402

models.ChangeList.__contains__ = lambda self, item: False
create = models.FakeZone.add_rrset


def add_rrset(self, record_set):
    name = record_set["Name"].rstrip(".") + "."
    if any(r.name.rstrip(".") + "." == name and r.type_ == record_set["Type"] for r in self.rrsets):
        raise ResourceRecordAlreadyExists(name=name, _type=record_set["Type"])
    return create(self, record_set)


models.FakeZone.add_rrset = add_rrset

if "--ignore-conditional-writes" in sys.argv:
    sys.argv.remove("--ignore-conditional-writes")
    import moto.s3.responses as s3_responses  # noqa: E402
    from werkzeug.datastructures import Headers  # noqa: E402

    put_object = s3_responses.S3Response.put_object

    def put_ignoring_conditions(self):
        headers = Headers(self.headers)
        headers.remove("If-Match")
        headers.remove("If-None-Match")
        self.headers = headers
        return put_object(self)

    s3_responses.S3Response.put_object = put_ignoring_conditions

from moto.server import main  # noqa: E402 (after the patches, which it must see)

sys.exit(main())
