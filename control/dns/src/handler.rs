//! Each request: checked (one question of class IN, opcode QUERY, EDNS version 0), answered
//! from the cache for the cluster zone or forwarded upstream, and encoded by hickory (which
//! truncates a UDP answer to the client's EDNS payload size, 512 bytes without EDNS, and sets
//! TC). Malformed messages never reach this handler: hickory's server answers FORMERR when it
//! can read a header, and drops the packet otherwise.

use std::sync::{Arc, PoisonError, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use wasmkube_client::informers::Synced;

use crate::forward::Forwarder;
use crate::index::Index;
use crate::lookup::{Outcome, Zone};

/// How many CNAMEs (ExternalName Services pointing at each other) an answer follows.
const MAX_CNAME_CHAIN: usize = 8;

/// The request handler of the DNS server.
pub(crate) struct Handler {
    pub(crate) zone: Zone,
    pub(crate) index: Arc<RwLock<Index>>,
    pub(crate) forwarder: Forwarder,
    /// The informers' first lists; until both are in, names of the zone are SERVFAIL.
    pub(crate) synced: Vec<Synced>,
}

/// A response before encoding: header fields and sections.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    truncated: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Self {
        Reply {
            code,
            authoritative: false,
            recursion_available: true,
            truncated: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn authoritative(code: ResponseCode) -> Self {
        Reply {
            authoritative: true,
            ..Reply::error(code)
        }
    }

    /// An upstream's answer, relayed.
    fn relayed(message: Message) -> Self {
        Reply {
            code: message.metadata.response_code,
            authoritative: message.metadata.authoritative,
            recursion_available: message.metadata.recursion_available,
            truncated: message.metadata.truncation,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }
}

impl Handler {
    fn lookup(&self, name: &Name, qtype: RecordType) -> Outcome {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        self.zone.lookup(&index, name, qtype)
    }

    /// The reply to one well-formed question.
    async fn answer(&self, request: &Request, query: &Query) -> Reply {
        let qtype = query.query_type();
        let outcome = self.lookup(query.name(), qtype);
        if !matches!(outcome, Outcome::Forward) && !self.synced.iter().all(Synced::has_synced) {
            return Reply::error(ResponseCode::ServFail);
        }
        match outcome {
            Outcome::Records {
                answers,
                additionals,
            } => Reply {
                answers,
                additionals,
                ..Reply::authoritative(ResponseCode::NoError)
            },
            Outcome::NoData(soa) => Reply {
                authorities: vec![soa],
                ..Reply::authoritative(ResponseCode::NoError)
            },
            Outcome::NxDomain(soa) => Reply {
                authorities: vec![soa],
                ..Reply::authoritative(ResponseCode::NXDomain)
            },
            Outcome::Cname { record, target } => {
                let mut reply = Reply {
                    answers: vec![record],
                    ..Reply::authoritative(ResponseCode::NoError)
                };
                self.follow(request, target, qtype, &mut reply).await;
                reply
            }
            Outcome::Forward => self.forward(request, query).await,
        }
    }

    /// Adds the records of a CNAME's target (of the type asked) to `reply`: from the cache
    /// when the target is in the zone, else from upstream for A and AAAA (CoreDNS resolves
    /// an ExternalName's target through itself).
    async fn follow(
        &self,
        request: &Request,
        mut target: Name,
        qtype: RecordType,
        reply: &mut Reply,
    ) {
        if qtype == RecordType::CNAME {
            return;
        }
        for _ in 0..MAX_CNAME_CHAIN {
            match self.lookup(&target, qtype) {
                Outcome::Records {
                    answers,
                    additionals,
                } => {
                    reply.answers.extend(answers);
                    reply.additionals.extend(additionals);
                    return;
                }
                Outcome::Cname {
                    record,
                    target: next,
                } => {
                    reply.answers.push(record);
                    target = next;
                }
                Outcome::NoData(_) | Outcome::NxDomain(_) => return,
                Outcome::Forward => {
                    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
                        return;
                    }
                    let query = Query::query(target, qtype);
                    let upstream = self.forward(request, &query).await;
                    if upstream.code == ResponseCode::NoError {
                        reply.answers.extend(upstream.answers);
                    }
                    return;
                }
            }
        }
    }

    async fn forward(&self, request: &Request, query: &Query) -> Reply {
        if self.forwarder.is_empty() {
            return Reply::error(ResponseCode::ServFail);
        }
        let payload = request.edns.as_ref().map(Edns::max_payload);
        let forwarded = self
            .forwarder
            .forward(
                query,
                request.metadata.recursion_desired,
                payload,
                request.protocol(),
            )
            .await;
        match forwarded {
            Some(message) => Reply::relayed(message),
            None => Reply::error(ResponseCode::ServFail),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(512));
            ours.set_version(0);
            ours
        });
        let queries = request.queries.queries();
        let reply = if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            Reply::error(ResponseCode::BADVERS)
        } else if request.metadata.message_type != MessageType::Query || queries.len() != 1 {
            Reply::error(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else if queries[0].query_class() != DNSClass::IN {
            Reply::error(ResponseCode::Refused)
        } else {
            self.answer(request, queries[0].original()).await
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = reply.recursion_available;
        metadata.truncation = reply.truncated;
        let response = MessageResponseBuilder::new(&request.queries, response_edns.as_ref()).build(
            metadata,
            &reply.answers,
            &reply.authorities,
            &[],
            &reply.additionals,
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending a DNS response failed");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
