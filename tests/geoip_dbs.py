"""Writes the MaxMind `.mmdb` databases the geoip tests read, with the `mmdb-writer` package
(pip install -r requirements-test.txt), into the directory given as the only argument:

  city.mmdb     GeoLite2-City, IPv6 tree with IPv4 networks under ::/96 and, for some of them,
                the IPv4-mapped ::ffff:0:0/96 aliases MaxMind's own databases carry
  country.mmdb  GeoLite2-Country, IPv4-only tree
  asn.mmdb      GeoLite2-ASN, IPv6 tree (IPv4 under ::/96 and ::ffff:0:0/96)
  unknown.mmdb  a city record in a database of type "UnknownDbType"
  domain.mmdb   GeoIP2-Domain: a type geoip knows but reads nothing from
  corrupt.mmdb  the first half of city.mmdb (no metadata section)
"""

import os
import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU32
from netaddr import IPSet


def names(en, **other):
    d = {"en": en}
    d.update(other)
    return d


CAMBRIDGE = {
    "city": {"geoname_id": 2653941, "names": names("Cambridge", es="Cambridge")},
    "continent": {"code": "EU", "geoname_id": 6255148, "names": names("Europe", es="Europa")},
    "country": {
        "iso_code": "GB",
        "geoname_id": 2635167,
        "names": names("United Kingdom", es="Reino Unido"),
        "is_in_european_union": True,
    },
    "location": {
        "accuracy_radius": 200,
        "latitude": MmdbF64(52.2242),
        "longitude": MmdbF64(0.1315),
        "time_zone": "Europe/London",
    },
    "postal": {"code": "CB4"},
    "subdivisions": [
        {"iso_code": "ENG", "names": names("England")},
        {"iso_code": "CAM", "names": names("Cambridgeshire")},
    ],
}

# The loopback network: where the tests' own queries come from (127.0.0.2 is in Springfield).
EXAMPLESHIRE = {
    "city": {"names": names("Exampleshire", de="Beispielstadt")},
    "continent": {"code": "EU", "names": names("Europe")},
    "country": {"iso_code": "NL", "names": names("Netherlands"), "is_in_european_union": True},
    "location": {
        "latitude": MmdbF64(52.3676),
        "longitude": MmdbF64(4.9041),
        "time_zone": "Europe/Amsterdam",
    },
    "postal": {"code": "1012"},
    "subdivisions": [{"iso_code": "NH"}],
}

SPRINGFIELD = {
    "city": {"names": names("Springfield")},
    "continent": {"code": "NA", "names": names("North America")},
    "country": {"iso_code": "US", "names": names("United States")},
    "location": {
        "latitude": MmdbF64(39.7817),
        "longitude": MmdbF64(-89.6501),
        "time_zone": "America/Chicago",
    },
    # A subdivision without a code still takes its place in the list.
    "subdivisions": [{"iso_code": "IL"}, {"names": names("Sangamon")}],
}

# No city, no location: the coordinates are absent, not zero.
COUNTRY_ONLY = {
    "continent": {"code": "AS", "names": names("Asia")},
    "country": {"iso_code": "JP", "names": names("Japan")},
}

SIXTON = {
    "city": {"names": names("Sixton")},
    "continent": {"code": "EU", "names": names("Europe")},
    "country": {"iso_code": "DE", "names": names("Germany"), "is_in_european_union": True},
    "location": {"latitude": MmdbF64(50.1109), "longitude": MmdbF64(8.6821), "time_zone": "Europe/Berlin"},
}


def v6_writer(kind):
    return MMDBWriter(ip_version=6, database_type=kind, ipv4_compatible=True)


def add(w, nets, rec, mapped=False):
    w.insert_network(IPSet(nets), rec)
    if mapped:
        # The ::ffff:a.b.c.d aliases of IPv4 networks (an ECS option's IPv4 address is looked
        # up there, as CoreDNS does).
        alias = []
        for n in nets:
            addr, plen = n.split("/")
            alias.append(f"::ffff:{addr}/{96 + int(plen)}")
        w.insert_network(IPSet(alias), rec)


def main(out):
    os.makedirs(out, exist_ok=True)

    w = v6_writer("GeoLite2-City")
    add(w, ["127.0.0.0/8"], EXAMPLESHIRE, mapped=True)
    add(w, ["127.0.0.2/32"], SPRINGFIELD, mapped=True)
    add(w, ["81.2.69.142/32"], CAMBRIDGE, mapped=True)
    add(w, ["198.51.100.0/24"], SPRINGFIELD, mapped=True)
    add(w, ["203.0.113.0/24"], COUNTRY_ONLY)  # no mapped alias
    add(w, ["2001:db8::/32"], SIXTON)
    w.to_db_file(os.path.join(out, "city.mmdb"))

    w = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    w.insert_network(IPSet(["127.0.0.0/8"]), {
        "continent": {"code": "EU", "names": names("Europe")},
        "country": {"iso_code": "NL", "names": names("Netherlands"), "is_in_european_union": True},
    })
    w.insert_network(IPSet(["198.51.100.0/24"]), {
        "continent": {"code": "NA", "names": names("North America")},
        "country": {"iso_code": "US", "names": names("United States")},
    })
    w.to_db_file(os.path.join(out, "country.mmdb"))

    w = v6_writer("GeoLite2-ASN")
    add(w, ["127.0.0.0/8"], {
        "autonomous_system_number": MmdbU32(64500),
        "autonomous_system_organization": "Loopback Networks",
    }, mapped=True)
    add(w, ["127.0.0.2/32"], {
        "autonomous_system_number": MmdbU32(64502),
        "autonomous_system_organization": "Second Loopback",
    }, mapped=True)
    add(w, ["81.2.69.142/32"], {
        "autonomous_system_number": MmdbU32(12345),
        "autonomous_system_organization": "Test ASN Organization",
    }, mapped=True)
    add(w, ["10.0.0.0/8"], {
        "autonomous_system_number": MmdbU32(0),
        "autonomous_system_organization": "Not routed",
    }, mapped=True)
    add(w, ["2001:db8::/32"], {"autonomous_system_number": MmdbU32(64501)})
    w.to_db_file(os.path.join(out, "asn.mmdb"))

    w = v6_writer("UnknownDbType")
    add(w, ["127.0.0.0/8"], EXAMPLESHIRE)
    w.to_db_file(os.path.join(out, "unknown.mmdb"))

    w = v6_writer("GeoIP2-Domain")
    add(w, ["127.0.0.0/8"], {"domain": "example.com"})
    w.to_db_file(os.path.join(out, "domain.mmdb"))

    with open(os.path.join(out, "city.mmdb"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "corrupt.mmdb"), "wb") as f:
        f.write(data[: len(data) // 2])


if __name__ == "__main__":
    main(sys.argv[1])
