//! Answers from the cache, as CoreDNS's kubernetes plugin gives them: the names of the
//! cluster zone (`<service>.<ns>.svc.<zone>`, `<endpoint>.<service>.<ns>.svc.<zone>`,
//! `_<port>._<proto>.<service>.<ns>.svc.<zone>`, `<a-b-c-d>.<ns>.pod.<zone>`, the apex's
//! SOA and NS, `dns-version.<zone>`) and PTR names of the addresses the cache knows.
//!
//! A name of the zone that exists without a record of the asked type is NODATA (NOERROR, no
//! answer, the SOA in the authority section); a name that does not exist is NXDOMAIN. A
//! reverse name the cache does not know, and any name outside the zone, is forwarded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::index::{Index, PortEntry, ServiceKind, SliceEntry};

/// The version of the Kubernetes DNS schema answered at `dns-version.<zone>`.
const SCHEMA_VERSION: &str = "1.1.0";

/// The cluster zone and how its records are written.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// The zone, lower-case and fully qualified (`cluster.local.`).
    pub(crate) apex: Name,
    /// The TTL of every record and of negative answers.
    pub(crate) ttl: u32,
    /// The cluster DNS Service's address (`ns.dns.<zone>`).
    pub(crate) dns_ip: Option<IpAddr>,
}

/// What a query gets from the cache.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Records of the name (answer section) and the addresses of their targets (additional).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// An ExternalName Service: its CNAME; the target is looked up in turn for A/AAAA.
    Cname { record: Record, target: Name },
    /// The name exists, without records of the type: the zone's SOA for the authority section.
    NoData(Record),
    /// The name does not exist: the zone's SOA for the authority section.
    NxDomain(Record),
    /// Not a name the cluster zone answers: for the upstream resolvers.
    Forward,
}

/// The reverse zones (the default Corefile's `kubernetes cluster.local in-addr.arpa ip6.arpa`).
fn reverse_zone(name: &Name) -> Option<Name> {
    ["in-addr.arpa.", "ip6.arpa."]
        .into_iter()
        .filter_map(|z| Name::from_ascii(z).ok())
        .find(|z| z.zone_of(name))
}

impl Zone {
    /// The zone's SOA record, owned by `owner` (the apex or a reverse zone), as CoreDNS's:
    /// `ns.dns.<zone> hostmaster.<zone>`, refresh 7200, retry 1800, expire 86400, minimum the TTL.
    pub(crate) fn soa(&self, owner: &Name, serial: u32) -> Record {
        let ns = self.name("ns.dns").unwrap_or_else(|| self.apex.clone());
        let hostmaster = self.name("hostmaster").unwrap_or_else(|| self.apex.clone());
        Record::from_rdata(
            owner.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                ns, hostmaster, serial, 7200, 1800, 86400, self.ttl,
            )),
        )
    }

    /// `relative.<zone>`, if it makes a valid name.
    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(relative)
            .ok()?
            .append_domain(&self.apex)
            .ok()
    }

    fn record(&self, owner: &Name, data: RData) -> Record {
        Record::from_rdata(owner.clone(), self.ttl, data)
    }

    fn address(&self, owner: &Name, ip: IpAddr) -> Record {
        match ip {
            IpAddr::V4(v4) => self.record(owner, RData::A(A::from(v4))),
            IpAddr::V6(v6) => self.record(owner, RData::AAAA(AAAA::from(v6))),
        }
    }

    /// Answers `qname` (as asked, any case) of type `qtype` from `index`.
    pub(crate) fn lookup(&self, index: &Index, qname: &Name, qtype: RecordType) -> Outcome {
        let lower = qname.to_lowercase();
        if !self.apex.zone_of(&lower) {
            return match reverse_zone(&lower) {
                Some(zone) => self.reverse(index, qname, &lower, &zone, qtype),
                None => Outcome::Forward,
            };
        }
        let soa = self.soa(&self.apex, index.serial());
        let labels: Vec<String> = lower
            .iter()
            .take(usize::from(lower.num_labels() - self.apex.num_labels()))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let answer = |records: Vec<Record>, additionals: Vec<Record>, soa: Record| {
            if records.is_empty() {
                Outcome::NoData(soa)
            } else {
                Outcome::Records {
                    answers: records,
                    additionals,
                }
            }
        };
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => answer(vec![soa.clone()], Vec::new(), soa),
                RecordType::NS => {
                    let Some(ns) = self.name("ns.dns") else {
                        return Outcome::NoData(soa);
                    };
                    let glue = self.dns_ip.map(|ip| self.address(&ns, ip));
                    answer(
                        vec![self.record(qname, RData::NS(NS(ns)))],
                        glue.into_iter().collect(),
                        soa,
                    )
                }
                _ => Outcome::NoData(soa),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT => answer(
                    vec![self.record(qname, RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])))],
                    Vec::new(),
                    soa,
                ),
                _ => Outcome::NoData(soa),
            },
            ["dns"] | ["svc"] | ["pod"] => Outcome::NoData(soa),
            ["ns", "dns"] => {
                let records = self
                    .dns_ip
                    .filter(|ip| wants(qtype, *ip))
                    .map(|ip| self.address(qname, ip));
                answer(records.into_iter().collect(), Vec::new(), soa)
            }
            [namespace, "svc"] => {
                if index.has_namespace(namespace) {
                    Outcome::NoData(soa)
                } else {
                    Outcome::NxDomain(soa)
                }
            }
            [service, namespace, "svc"] => {
                self.service(index, qname, namespace, service, None, qtype, soa)
            }
            [endpoint, service, namespace, "svc"] => {
                self.endpoint(index, qname, namespace, service, endpoint, qtype, soa)
            }
            [port, protocol, service, namespace, "svc"] => {
                match (port.strip_prefix('_'), protocol.strip_prefix('_')) {
                    (Some(port), Some(protocol)) => self.service(
                        index,
                        qname,
                        namespace,
                        service,
                        Some((port, protocol)),
                        qtype,
                        soa,
                    ),
                    _ => Outcome::NxDomain(soa),
                }
            }
            [_, "pod"] => Outcome::NoData(soa),
            [address, _namespace, "pod"] => match pod_address(address) {
                Some(ip) if wants(qtype, ip) => {
                    answer(vec![self.address(qname, ip)], Vec::new(), soa)
                }
                Some(_) => Outcome::NoData(soa),
                None => Outcome::NxDomain(soa),
            },
            _ => Outcome::NxDomain(soa),
        }
    }

    /// A Service's name, or with `port` one of its `_port._proto` names.
    #[allow(clippy::too_many_arguments)]
    fn service(
        &self,
        index: &Index,
        qname: &Name,
        namespace: &str,
        service: &str,
        port: Option<(&str, &str)>,
        qtype: RecordType,
        soa: Record,
    ) -> Outcome {
        let Some(entry) = index.service(namespace, service) else {
            return Outcome::NxDomain(soa);
        };
        let matches =
            |p: &PortEntry| port.is_none_or(|(name, proto)| p.name == name && p.protocol == proto);
        let service_name = qname.trim_to(usize::from(self.apex.num_labels()) + 3);
        match &entry.kind {
            ServiceKind::ExternalName(target) => {
                if port.is_some() {
                    return Outcome::NxDomain(soa);
                }
                match Name::from_ascii(target).map(|mut n| {
                    n.set_fqdn(true);
                    n
                }) {
                    Ok(target) => Outcome::Cname {
                        record: self.record(qname, RData::CNAME(CNAME(target.clone()))),
                        target,
                    },
                    Err(_) => Outcome::NoData(soa),
                }
            }
            ServiceKind::ClusterIp(ips) => {
                let ports: Vec<&PortEntry> = entry.ports.iter().filter(|p| matches(p)).collect();
                if port.is_some() && ports.is_empty() {
                    return Outcome::NxDomain(soa);
                }
                match qtype {
                    RecordType::SRV => {
                        let weight = srv_weight(ports.len());
                        let answers = ports
                            .iter()
                            .map(|p| {
                                self.record(
                                    qname,
                                    RData::SRV(SRV::new(0, weight, p.port, service_name.clone())),
                                )
                            })
                            .collect();
                        let additionals = ips
                            .iter()
                            .map(|ip| self.address(&service_name, *ip))
                            .collect();
                        Self::records_or(answers, additionals, soa)
                    }
                    _ if port.is_some() => Outcome::NoData(soa),
                    _ => {
                        let answers = ips
                            .iter()
                            .filter(|ip| wants(qtype, **ip))
                            .map(|ip| self.address(qname, *ip))
                            .collect();
                        Self::records_or(answers, Vec::new(), soa)
                    }
                }
            }
            ServiceKind::Headless => {
                let slices = index.slices(namespace, service);
                self.endpoints(&service_name, qname, &slices, None, port, qtype, soa)
            }
        }
    }

    /// `<endpoint>.<service>.<ns>.svc`: the addresses of the Service's endpoints of that name.
    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        &self,
        index: &Index,
        qname: &Name,
        namespace: &str,
        service: &str,
        endpoint: &str,
        qtype: RecordType,
        soa: Record,
    ) -> Outcome {
        if index.service(namespace, service).is_none() {
            return Outcome::NxDomain(soa);
        }
        let service_name = qname.trim_to(usize::from(self.apex.num_labels()) + 3);
        let slices = index.slices(namespace, service);
        self.endpoints(
            &service_name,
            qname,
            &slices,
            Some(endpoint),
            None,
            qtype,
            soa,
        )
    }

    /// The answers of endpoint names: A/AAAA of every ready address (of the one endpoint
    /// label if given); SRV per address and port, targets the endpoints' names. No ready
    /// address at all is NXDOMAIN, as CoreDNS answers a headless Service without endpoints.
    #[allow(clippy::too_many_arguments)]
    fn endpoints(
        &self,
        service_name: &Name,
        qname: &Name,
        slices: &[&SliceEntry],
        label: Option<&str>,
        port: Option<(&str, &str)>,
        qtype: RecordType,
        soa: Record,
    ) -> Outcome {
        let mut addresses: Vec<(IpAddr, &str, &SliceEntry)> = Vec::new();
        for slice in slices {
            for e in &slice.endpoints {
                if label.is_none_or(|l| l == e.label) {
                    addresses.push((e.ip, &e.label, slice));
                }
            }
        }
        if addresses.is_empty() {
            return Outcome::NxDomain(soa);
        }
        let port_matches =
            |p: &PortEntry| port.is_none_or(|(name, proto)| p.name == name && p.protocol == proto);
        if port.is_some()
            && !addresses
                .iter()
                .any(|(_, _, s)| s.ports.iter().any(port_matches))
        {
            return Outcome::NxDomain(soa);
        }
        match qtype {
            RecordType::SRV => {
                let mut targets = Vec::new();
                let mut srvs = Vec::new();
                for (ip, label, slice) in &addresses {
                    let Ok(target) = service_name.prepend_label(*label) else {
                        continue;
                    };
                    for p in slice.ports.iter().filter(|p| port_matches(p)) {
                        srvs.push((p.port, target.clone()));
                    }
                    targets.push(self.address(&target, *ip));
                }
                let weight = srv_weight(srvs.len());
                let answers = srvs
                    .into_iter()
                    .map(|(port, target)| {
                        self.record(qname, RData::SRV(SRV::new(0, weight, port, target)))
                    })
                    .collect();
                Self::records_or(answers, targets, soa)
            }
            _ if port.is_some() => Outcome::NoData(soa),
            _ => {
                let mut seen = Vec::new();
                for (ip, _, _) in &addresses {
                    if wants(qtype, *ip) && !seen.contains(ip) {
                        seen.push(*ip);
                    }
                }
                let answers = seen.into_iter().map(|ip| self.address(qname, ip)).collect();
                Self::records_or(answers, Vec::new(), soa)
            }
        }
    }

    fn records_or(answers: Vec<Record>, additionals: Vec<Record>, soa: Record) -> Outcome {
        if answers.is_empty() {
            Outcome::NoData(soa)
        } else {
            Outcome::Records {
                answers,
                additionals,
            }
        }
    }

    /// A name under `in-addr.arpa.` or `ip6.arpa.`: the names the cache has for the address;
    /// an address it does not know goes upstream (the default Corefile's `fallthrough`).
    fn reverse(
        &self,
        index: &Index,
        qname: &Name,
        lower: &Name,
        zone: &Name,
        qtype: RecordType,
    ) -> Outcome {
        let Ok(net) = lower.parse_arpa_name() else {
            return Outcome::Forward;
        };
        if net.prefix_len() != net.max_prefix_len() {
            return Outcome::Forward;
        }
        let names = index.names_of(net.addr());
        if names.is_empty() {
            return Outcome::Forward;
        }
        let soa = self.soa(zone, index.serial());
        if qtype != RecordType::PTR {
            return Outcome::NoData(soa);
        }
        let answers = names
            .into_iter()
            .filter_map(|n| self.name(n))
            .map(|n| self.record(qname, RData::PTR(PTR(n))))
            .collect();
        Self::records_or(answers, Vec::new(), soa)
    }
}

/// Whether a query of `qtype` asks for the address `ip` (A for IPv4, AAAA for IPv6; ANY both).
fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _)
    )
}

/// The SRV weight of each of `n` records of one priority: CoreDNS's `100 / n`, floored.
fn srv_weight(n: usize) -> u16 {
    u16::try_from(100 / n.max(1)).unwrap_or(100)
}

/// The address of a pod name's first label, "pods insecure": `10-42-0-5` is 10.42.0.5,
/// `fd00--5` is fd00::5; anything else is no address.
fn pod_address(label: &str) -> Option<IpAddr> {
    if label.contains("--") || label.matches('-').count() > 3 {
        return label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    label
        .replace('-', ".")
        .parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_parse_as_coredns_pods_insecure() {
        assert_eq!(pod_address("10-42-0-5"), Some("10.42.0.5".parse().unwrap()));
        assert_eq!(pod_address("fd00--5"), Some("fd00::5".parse().unwrap()));
        assert_eq!(
            pod_address("fd00-0-0-0-0-0-0-5"),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(pod_address("10-42-0"), None);
        assert_eq!(pod_address("web"), None);
        assert_eq!(pod_address("300-1-1-1"), None);
    }

    #[test]
    fn srv_weights_split_100() {
        assert_eq!(srv_weight(1), 100);
        assert_eq!(srv_weight(3), 33);
        assert_eq!(srv_weight(0), 100);
    }
}
